"""S9: deployment and monitoring -- container image and compose file (repository root), Prometheus
rules and Grafana dashboards over the S8 service's metrics, a Redis bus that carries closed
candles across hosts, and an optional InfluxDB sink. See S9/README.md."""
