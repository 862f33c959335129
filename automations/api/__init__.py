"""REST API v1 (Django REST framework) and the operations endpoints (/healthz, /readyz, /metrics)."""
