"""Management commands of the portal (manage.py ...)."""
