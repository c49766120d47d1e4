"""Fault isolation: fault records, the circuit breaker, degradation."""
