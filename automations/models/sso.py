"""Single sign-on: who a provider's subject is here, and which groups grant which access.

See automations/identity/sso.py for the login flow and docs/security.md for the rules in prose.
"""
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


class SsoIdentity(models.Model):
    """Binds a local user to one OpenID Connect subject (`iss` + `sub`).

    Later logins find the user by this binding only, never by a username or e-mail claim the
    provider may let people change.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identities")
    issuer = models.CharField(max_length=512)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_once")]
        verbose_name = "SSO identity"
        verbose_name_plural = "SSO identities"

    def __str__(self) -> str:
        return f"{self.user} = {self.subject} @ {self.issuer}"


class SsoGroupRule(models.Model):
    """A provider group (a value of the groups claim) grants a role.

    member and lead need a team; auditor and admin are global. Every SSO login recomputes the
    user's access from the rules that match their claims: a team with at least one rule, and
    the auditor and admin roles once any rule grants them, are managed by SSO only.
    """

    class Role(models.TextChoices):
        MEMBER = "member", "Member of the team"
        LEAD = "lead", "Lead (approver) of the team"
        AUDITOR = "auditor", "Auditor (reads everything)"
        ADMIN = "admin", "Admin (Django admin, superuser)"

    TEAM_ROLES = (Role.MEMBER, Role.LEAD)

    claim_value = models.CharField(max_length=256, help_text="A value of the groups claim, e.g. platform-leads.")
    role = models.CharField(max_length=16, choices=Role)
    team = models.ForeignKey("automations.Team", null=True, blank=True, on_delete=models.CASCADE,
                             related_name="sso_rules", help_text="Required for member and lead; empty otherwise.")

    class Meta:
        ordering = ["claim_value", "role"]
        constraints = [
            models.UniqueConstraint(fields=["claim_value", "role", "team"], name="sso_rule_once"),
            models.UniqueConstraint(fields=["claim_value", "role"], condition=models.Q(team__isnull=True),
                                    name="sso_rule_once_global"),
            models.CheckConstraint(
                condition=(models.Q(role__in=["member", "lead"], team__isnull=False)
                           | models.Q(role__in=["auditor", "admin"], team__isnull=True)),
                name="sso_rule_team_matches_role",
            ),
        ]
        verbose_name = "SSO group rule"

    def __str__(self) -> str:
        where = f" of {self.team}" if self.team_id else ""
        return f"{self.claim_value} → {self.role}{where}"

    def clean(self):
        if self.role in self.TEAM_ROLES and not self.team_id:
            raise ValidationError({"team": "Member and lead rules name a team."})
        if self.role not in self.TEAM_ROLES and self.team_id:
            raise ValidationError({"team": "Auditor and admin are not per team; leave the team empty."})
