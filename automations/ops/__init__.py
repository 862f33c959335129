"""Operations: health endpoints, Prometheus metrics, structured logging and request-id middleware."""
