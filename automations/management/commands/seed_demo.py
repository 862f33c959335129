"""Seed the demo: teams, users, the sandbox account and team runbook policies. Idempotent."""
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand
from django.db import transaction

from automations import services
from automations.models import (Account, Membership, RoleParameter, Runbook, Team, TeamLocationGrant, TeamResource,
                                TeamRunbook)

PASSWORD = "delegate-demo"
ACCOUNT_ID = "123456789012"
USERS = [  # username, team, role
    ("alice", "platform", Membership.Role.MEMBER),
    ("bob", "platform", Membership.Role.LEAD),
    ("dave", "data", Membership.Role.MEMBER),
    ("erin", "data", Membership.Role.LEAD),
    ("frank", "platform", Membership.Role.LEAD),
]
# The sandbox's ChangeCalendar document (sandbox/documents/own/Delegate-StopWindow.ics) gating stops.
STOP_CALENDAR = "Delegate-StopWindow"
# Runbook, teams, approvals required.
# The sandbox's seeded organization (sandbox/world.py: three OUs of four member accounts each).
# The platform team may run fleet runbooks across staging and development, not production.
DEMO_OU_GRANTS = {"platform": [("ou-dlg0-staging0", "Staging"), ("ou-dlg0-development", "Development")]}
MULTI_ACCOUNT_RUNBOOK = "Delegate-LabelFleet"  # no resources, no assumeRole: runs as each member's execution role

POLICIES = [
    ("AWS-RestartEC2Instance", ("platform", "data"), 1),
    ("AWS-StopEC2Instance", ("platform", "data"), 1),
    ("AWS-StartEC2Instance", ("platform", "data"), 0),
    ("AWS-CreateImage", ("platform",), 1),
    ("AWS-ResizeInstance", ("platform",), 2),
    ("AWS-CreateSnapshot", ("data",), 1),
    ("AWS-StopEC2InstanceWithApproval", ("platform",), 1),
    ("AWS-EnableS3BucketKeys", ("data",), 1),
]


class Command(BaseCommand):
    help = "Create the demo teams, users (password delegate-demo), account and policies, then sync the catalog."

    def handle(self, *args, **options):
        User = get_user_model()
        with transaction.atomic():
            account, _ = Account.objects.update_or_create(account_id=ACCOUNT_ID, defaults={
                "name": "Sandbox", "regions": [settings.DELEGATE_DEFAULT_REGION, "us-east-1"],
                "dispatch_role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/DelegateDispatch",
                "automation_role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/DelegateAutomation",
            })
            teams = {}
            for name, display in (("platform", "Platform"), ("data", "Data")):
                teams[name], _ = Team.objects.get_or_create(name=name, defaults={"display_name": display})
                teams[name].accounts.add(account)
            for username, team, role in USERS:
                user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
                if created:
                    user.set_password(PASSWORD)
                    user.save()
                Membership.objects.update_or_create(team=teams[team], user=user, defaults={"role": role})
            auditors, _ = Group.objects.get_or_create(name="auditors")
            auditors.permissions.add(Permission.objects.get(codename="view_all_requests"))
            carol, created = User.objects.get_or_create(username="carol", defaults={"email": "carol@example.com"})
            if created:
                carol.set_password(PASSWORD)
                carol.save()
            carol.groups.add(auditors)
            if not User.objects.filter(username="admin").exists():
                User.objects.create_superuser("admin", "admin@example.com", PASSWORD)
        # Metadata first, so the policies can point at runbooks; then content for the offered ones.
        report = services.runbook_catalog_sync(only_offered=True)
        for name, team_names, approvals in POLICIES:
            for runbook in Runbook.objects.filter(account=account, name=name):
                for team_name in team_names:
                    TeamRunbook.objects.get_or_create(team=teams[team_name], runbook=runbook,
                                                      defaults={"approvals_required": approvals,
                                                                "justification_required": True})
        for runbook in Runbook.objects.filter(account=account, owner_kind__in=("self", "private")):
            for team in teams.values():
                TeamRunbook.objects.get_or_create(team=team, runbook=runbook, defaults={
                    "approvals_required": 1, "justification_required": True})
        report = services.runbook_catalog_sync(only_offered=True)
        # An admin's setup: roles handed to Lambda/CloudFormation, per runbook parameter, and the
        # bucket the data team may name (S3 has no tags Delegate reads: an allowlist is its scope).
        for runbook in Runbook.objects.filter(account=account, team_policies__isnull=False).distinct():
            for version in runbook.versions.all():
                for parameter, spec in version.parameters.items():
                    if spec.get("role_kind") == "handoff":
                        RoleParameter.objects.get_or_create(runbook=runbook, parameter=parameter, defaults={
                            "value": f"arn:aws:iam::{ACCOUNT_ID}:role/DelegateLambda"})
        # Multi-account runs (docs/multi-account.md): an admin lets the fleet runbook run without
        # Delegate's automation role (each location runs as its member account's execution role)
        # and grants the platform team two OUs.
        Runbook.objects.filter(account=account, name=MULTI_ACCOUNT_RUNBOOK).update(allow_unmanaged_identity=True)
        for team_name, grants in DEMO_OU_GRANTS.items():
            for target_id, label in grants:
                TeamLocationGrant.objects.get_or_create(team=teams[team_name], account=account, target_id=target_id,
                                                        defaults={"label": label})
        # An SSM change calendar (seeded in the sandbox, CLOSED outside 02:00-03:00 UTC) gates stops:
        # an approved stop request shows "held by change calendar Delegate-StopWindow until ...".
        Runbook.objects.filter(account=account, name="AWS-StopEC2Instance", change_calendars=[]).update(
            change_calendars=[STOP_CALENDAR])
        TeamResource.objects.get_or_create(team=teams["data"], account=account, kind=TeamResource.Kind.BUCKET,
                                           identifier="data-logs", defaults={"description": "demo bucket"})
        self.stdout.write(f"Seeded demo data; catalog: {report.documents} documents, {report.new_versions} new versions.")
        for error in report.errors:
            self.stderr.write(f"catalog error: {error}")
