"""The app config: wires login audit signals, structured logging and AWS call hooks at start-up."""
from django.apps import AppConfig


class AutomationsConfig(AppConfig):
    name = "automations"
    verbose_name = "Delegate automations"

    def ready(self) -> None:
        from automations.identity import signals  # noqa: F401  (login/logout audit)
        from automations.ops.logging import configure_structlog

        configure_structlog()

        # Every AWS attempt is paced (shared schedule) and counted (metrics); see automations.aws.
        from automations import aws
        from automations.ops import metrics
        from automations.aws import pacing

        aws.install_hooks(pacer=pacing.pace_aws_call, on_response=metrics.observe_aws_response)
