"""The app config: wires login audit signals, structured logging and AWS call hooks at start-up."""
from django.apps import AppConfig


class AutomationsConfig(AppConfig):
    name = "automations"
    verbose_name = "Delegate automations"

    def ready(self) -> None:
        from automations.identity import signals  # noqa: F401  (login/logout audit)
        from automations.ops.logging import configure_structlog

        configure_structlog()

        # A migrate that leaves an audit table without its append-only guards fails (audit_guards);
        # only then, with DELEGATE_DB_APP_ROLE set, the application role gets its grants (audit_roles).
        # Receivers run in the order connected, and the first one's exception stops the second.
        from django.db.models.signals import post_migrate

        from automations.audit import guards as audit_guards
        from automations.audit import roles as audit_roles

        post_migrate.connect(audit_guards.check_after_migrate, sender=self, dispatch_uid="delegate-audit-guards")
        post_migrate.connect(audit_roles.grant_after_migrate, sender=self, dispatch_uid="delegate-audit-roles")

        # Every AWS attempt is paced (shared schedule) and counted (metrics); see automations.aws.
        from automations import aws
        from automations.ops import metrics
        from automations.aws import pacing

        aws.install_hooks(pacer=pacing.pace_aws_call, on_response=metrics.observe_aws_response)
