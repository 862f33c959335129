"""Django admin: registers every ModelAdmin (Django imports this package at start-up)."""
from automations.admin import core, policy  # noqa: F401  (registration happens on import)
