"""Running the product as a service: log set-up, Prometheus metrics, the call-record file."""
