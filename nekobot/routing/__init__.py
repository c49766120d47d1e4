"""Inbound routing: the priority router and its dedup window."""
