"""REST API, dashboard and /metrics."""
