"""Multi-account runs: the accounts and OUs granted to a team, and each child execution.

What an admin grants a team in the organization, and the child executions (one per account
and Region) a request's run is made of."""
from django.db import models

from automations.models.teams import Account, Team

ORG_TARGET_PATTERN = r"^(\d{12}|ou-[a-z0-9]{4,32}-[a-z0-9]{8,32})$"


class TeamLocationGrant(models.Model):
    """An admin grants a team one member account or one organizational unit of the organization
    that `account` (the central account requests dispatch through) manages.

    An OU grant covers the accounts directly in that OU, resolved through AWS Organizations at
    submit and again at dispatch (an account moved out of the OU is out of scope from then on).
    """

    class Kind(models.TextChoices):
        ACCOUNT = "account", "Member account"
        OU = "ou", "Organizational unit"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="location_grants")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+",
                                help_text="The central account whose organization holds the target.")
    target_id = models.CharField(max_length=68, help_text="A 12-digit member account id or an OU id (ou-…).")
    label = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["team", "target_id"]
        constraints = [models.UniqueConstraint(fields=["team", "account", "target_id"], name="location_grant_unique")]

    def __str__(self) -> str:
        return f"{self.team} may target {self.label or self.target_id}"

    @property
    def kind(self) -> str:
        return self.Kind.OU if self.target_id.startswith("ou-") else self.Kind.ACCOUNT

    def clean(self):
        import re

        from django.core.exceptions import ValidationError

        super().clean()
        if not re.match(ORG_TARGET_PATTERN, self.target_id or ""):
            raise ValidationError({"target_id": "A 12-digit account id or an OU id (ou-xxxx-xxxxxxxx)."})


class LocationExecution(models.Model):
    """One child execution of a request's multi-account run, in one account and Region.

    Recorded (and audited) once when status sync first sees it; its status is AWS's, verbatim.
    """

    request = models.ForeignKey("automations.AutomationRequest", on_delete=models.PROTECT,
                                related_name="location_executions")
    execution_id = models.CharField(max_length=36, unique=True)
    account_id = models.CharField(max_length=12)
    region = models.CharField(max_length=32)
    aws_status = models.CharField(max_length=40, blank=True)
    failure_message = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["account_id", "region"]
        constraints = [models.UniqueConstraint(fields=["request", "account_id", "region"],
                                               name="location_execution_once_per_location")]

    def __str__(self) -> str:
        return f"{self.execution_id} in {self.account_id}/{self.region}"
