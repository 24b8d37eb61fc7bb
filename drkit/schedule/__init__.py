"""The scheduler daemon and its Prometheus metrics."""
