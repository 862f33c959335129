"""Fixtures for the sandbox tests: no Django, no database; a fresh sandbox per test.

time_scale=50 turns the ~10 s of a restart runbook into ~0.2 s.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

from sandbox import Sandbox

REGION = "eu-west-1"


# tests/conftest.py has autouse fixtures that need pytest-django's `settings`; these tests use
# no Django at all (they also run with -p no:django), so they override them by name.
@pytest.fixture(autouse=True)
def _fast_passwords():
    yield


@pytest.fixture(autouse=True)
def _reset_pacing():
    yield


@pytest.fixture
def sandbox():
    sb = Sandbox(port=0, time_scale=50).start()
    yield sb
    sb.stop()


@pytest.fixture
def client(sandbox):
    """client("ssm") -> a boto3 client on the sandbox with dummy credentials test/test.

    retries=False sends each call once (total_max_attempts=1), so a test sees a throttle
    instead of botocore retrying it; credentials= takes an AssumeRole `Credentials` dict.
    """

    def make(service: str, region: str = REGION, credentials: dict | None = None, retries: bool = True):
        keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        if credentials:
            keys = {
                "aws_access_key_id": credentials["AccessKeyId"],
                "aws_secret_access_key": credentials["SecretAccessKey"],
                "aws_session_token": credentials["SessionToken"],
            }
        config = Config(retries={"mode": "standard", "total_max_attempts": 3 if retries else 1})
        return boto3.client(service, endpoint_url=sandbox.url, region_name=region, config=config, **keys)

    return make


@pytest.fixture
def ssm(client):
    return client("ssm")


@pytest.fixture
def ec2(client):
    return client("ec2")


@pytest.fixture
def team_instances(ec2):
    """team_instances("platform") -> ids of that team's running instances (seeded inventory)."""

    def find(team: str, state: str = "running") -> list[str]:
        response = ec2.describe_instances(
            Filters=[
                {"Name": "tag:Team", "Values": [team]},
                {"Name": "instance-state-name", "Values": [state]},
            ]
        )
        return sorted(i["InstanceId"] for r in response["Reservations"] for i in r["Instances"])

    return find
