"""The status monitor: per-platform windows, alerts, Prometheus exposition."""
