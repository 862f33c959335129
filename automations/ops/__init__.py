"""Operations: Prometheus metrics, structured logging and the request-id middleware (health: api/operations.py)."""
