"""factory_boy factories for the starting state of tests ("given"); services perform the action ("when")."""
from pathlib import Path

import factory
from django.contrib.auth import get_user_model
from factory.django import DjangoModelFactory

from automations.models import Account, Membership, Runbook, RunbookVersion, Team, TeamRunbook
from automations.runbooks import (
    content_hash,
    identity_of,
    load_document,
    parse_parameters,
    pattern_problems,
    step_summary,
)

RUNBOOK_DIR = Path(__file__).resolve().parent.parent / "sandbox" / "documents" / "amazon"
ACCOUNT_ID = "123456789012"


def fixture_text(filename: str) -> str:
    return (RUNBOOK_DIR / filename).read_text()


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("delegate-test")


class AccountFactory(DjangoModelFactory):
    class Meta:
        model = Account
        django_get_or_create = ("account_id",)

    account_id = ACCOUNT_ID
    name = "Sandbox"
    regions = factory.LazyFunction(lambda: ["eu-west-1"])
    dispatch_role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role/DelegateDispatch"
    automation_role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role/DelegateAutomation"


class TeamFactory(DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"team{n}")


class MembershipFactory(DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.MEMBER


class RunbookFactory(DjangoModelFactory):
    class Meta:
        model = Runbook
        django_get_or_create = ("account", "region", "name")

    account = factory.SubFactory(AccountFactory)
    region = "eu-west-1"
    name = "AWS-RestartEC2Instance"
    owner = "Amazon"
    owner_kind = Runbook.Owner.AMAZON
    default_version = "1"
    latest_version = "1"


class RunbookVersionFactory(DjangoModelFactory):
    class Meta:
        model = RunbookVersion
        django_get_or_create = ("runbook", "version")

    class Params:
        filename = "aws-RestartEC2Instance.json"

    runbook = factory.SubFactory(RunbookFactory)
    version = "1"
    document_format = factory.LazyAttribute(lambda o: "YAML" if o.filename.endswith((".yml", ".yaml")) else "JSON")
    content = factory.LazyAttribute(lambda o: fixture_text(o.filename))
    content_hash = factory.LazyAttribute(lambda o: content_hash(o.content))
    # The sandbox seeds each document from the same file and hashes its text, as SSM does.
    ssm_hash = factory.LazyAttribute(lambda o: content_hash(o.content))
    ssm_hash_type = "Sha256"
    identity = factory.LazyAttribute(lambda o: identity_of(load_document(o.content, o.document_format)))
    parameters = factory.LazyAttribute(lambda o: parse_parameters(load_document(o.content, o.document_format)))
    steps = factory.LazyAttribute(lambda o: step_summary(load_document(o.content, o.document_format)))
    problems = factory.LazyAttribute(lambda o: pattern_problems(o.parameters))


class TeamRunbookFactory(DjangoModelFactory):
    class Meta:
        model = TeamRunbook

    team = factory.SubFactory(TeamFactory)
    runbook = factory.SubFactory(RunbookFactory)
    approvals_required = 1
    # The model's default is on; tests about other things submit without one (tests of the rule turn it on).
    justification_required = False
