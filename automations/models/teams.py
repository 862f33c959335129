"""Teams, memberships (member or lead) and AWS accounts."""
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

account_id_validator = RegexValidator(r"^\d{12}$", "An AWS account id is exactly 12 digits.")
role_arn_validator = RegexValidator(
    r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$", "Enter an IAM role ARN (arn:aws:iam::123456789012:role/Name)."
)

_CALENDAR_NAME = re.compile(r"^([a-zA-Z0-9_\-.]{3,128}|arn:aws[a-z-]*:ssm:[a-z0-9-]+:\d{12}:document/[a-zA-Z0-9_\-.]{3,128})$")


def validate_change_calendars(value) -> None:
    """A list of SSM ChangeCalendar document names or ARNs (what GetCalendarState takes)."""
    if not isinstance(value, list) or len(value) > 10:
        raise ValidationError("Give a list of at most 10 change calendar names or ARNs.")
    bad = [name for name in value if not isinstance(name, str) or not _CALENDAR_NAME.match(name)]
    if bad:
        raise ValidationError(f"Not an SSM document name or ARN: {', '.join(map(str, bad))}.")


class Team(models.Model):
    """A group of people who may request the same runbooks against the same resources.

    The team's scope is the set of resources carrying tag `scope_tag_key` = `scope_tag_value`
    (e.g. Team=platform). Requests are checked against it at submit and again at dispatch.
    """

    name = models.SlugField(max_length=64, unique=True)
    display_name = models.CharField(max_length=128, blank=True)
    scope_tag_key = models.CharField(max_length=128, default="Team")
    scope_tag_value = models.CharField(max_length=256, blank=True, help_text="Defaults to the team name.")
    accounts = models.ManyToManyField("automations.Account", blank=True, related_name="teams")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="automations.Membership", related_name="teams")
    change_calendars = models.JSONField(
        default=list, blank=True, validators=[validate_change_calendars], help_text="SSM ChangeCalendar documents (names or ARNs) that gate this team's runs: while one is "
        "CLOSED at the run's time, dispatch holds the request unless two approvers gave an emergency override.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.display_name or self.name

    @property
    def scope_tag(self) -> tuple[str, str]:
        return self.scope_tag_key, self.scope_tag_value or self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        LEAD = "lead", "Lead"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="membership_once_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class Account(models.Model):
    """An AWS account Delegate dispatches into, and the two roles it uses there.

    The dispatch role is what the worker assumes (STS); the automation role is what every
    execution runs as (the parameter its assumeRole references). Users never choose either.
    Other role parameters are configured per runbook (RoleParameter) or picked from a team's
    allowlist (TeamRole).
    """

    account_id = models.CharField(max_length=12, unique=True, validators=[account_id_validator])
    name = models.CharField(max_length=128)
    regions = models.JSONField(default=list, help_text='Regions offered, e.g. ["eu-west-1", "us-east-1"].')
    dispatch_role_arn = models.CharField(max_length=2048, validators=[role_arn_validator])
    automation_role_arn = models.CharField(max_length=2048, validators=[role_arn_validator])

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.account_id})"


class TeamResource(models.Model):
    """A resource of a service whose tags Delegate does not read (S3 buckets, RDS DB instances,
    SQS queues) that a team may name in requests: the admin's allowlist is its scope there."""

    class Kind(models.TextChoices):
        BUCKET = "bucket", "S3 bucket (name)"
        DB_INSTANCE = "db_instance", "RDS DB instance (identifier)"
        QUEUE = "queue", "SQS queue (URL)"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="allowed_resources")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind)
    identifier = models.CharField(max_length=512, help_text="Bucket name, DB instance identifier or queue URL.")
    region = models.CharField(max_length=32, blank=True, help_text="For DB instances (buckets are global).")
    description = models.CharField(max_length=256, blank=True)

    class Meta:
        ordering = ["team", "kind", "identifier"]
        constraints = [models.UniqueConstraint(fields=["team", "account", "kind", "identifier", "region"],
                                               name="team_resource_unique")]

    def __str__(self) -> str:
        return f"{self.team} may name {self.get_kind_display()} {self.identifier}"

    @property
    def canonical(self) -> str:
        """As inventory.canonical names it in request.resources."""
        if self.kind == self.Kind.BUCKET:
            return f"arn:aws:s3:::{self.identifier}"
        if self.kind == self.Kind.DB_INSTANCE:
            return f"arn:aws:rds:{self.region}:{self.account.account_id}:db:{self.identifier}"
        return self.identifier
