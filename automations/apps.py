from django.apps import AppConfig


class AutomationsConfig(AppConfig):
    name = "automations"
    verbose_name = "Delegate automations"

    def ready(self) -> None:
        from automations import signals  # noqa: F401  (login/logout audit)
        from automations.logging import configure_structlog

        configure_structlog()
