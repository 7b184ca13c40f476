"""Sprint 8: the 24/7 service (supervised workers, control API, Prometheus metrics)."""
