"""The unmodified AWS CLI against the sandbox, by --endpoint-url and by AWS_ENDPOINT_URL* variables.

Locally a missing `aws` skips these tests; under CI=true it fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

pytestmark = []


@pytest.fixture
def aws(sandbox, tmp_path):
    venv_cli = Path(sys.executable).with_name("aws")
    program = str(venv_cli) if venv_cli.exists() else shutil.which("aws")
    require(program is not None, "the AWS CLI (pip install awscli)", group="AWS CLI")
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_CONFIG_FILE=str(tmp_path / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )

    def run(*args: str, endpoint: bool = True, extra_env: dict | None = None, fails: bool = False):
        """The parsed JSON output, or with fails=True the error text of a failing command."""
        command = [program, *(["--endpoint-url", sandbox.url] if endpoint else []), "--output", "json", *args]
        done = subprocess.run(
            command, env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=60, check=False
        )
        if fails:
            assert done.returncode != 0, done.stdout
            return done.stderr
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else {}

    return run


# Each CLI run costs about half a second of start-up, so these tests make few, telling calls.


def test_cli_lists_and_fetches_documents(aws):
    listed = aws("ssm", "list-documents", "--filters", "Key=Owner,Values=Amazon")
    names = {d["Name"] for d in listed["DocumentIdentifiers"]}
    assert "AWS-RestartEC2Instance" in names and len(names) == 19 + 3  # fixtures + AWS child documents
    document = aws("ssm", "get-document", "--name", "AWS-EnableS3BucketKeys", "--document-format", "YAML")
    assert document["DocumentFormat"] == "YAML" and "mainSteps:" in document["Content"]


def test_cli_starts_and_reads_an_execution(aws, sandbox, team_instances):
    instance = team_instances("platform")[0]
    started = aws("ssm", "start-automation-execution", "--document-name", "AWS-RestartEC2Instance",
                  "--parameters", f"InstanceId={instance}")  # fmt: skip
    execution_id = started["AutomationExecutionId"]
    sandbox.wait_for_execution(execution_id, timeout=10)
    got = aws("ssm", "get-automation-execution", "--automation-execution-id", execution_id)
    assert got["AutomationExecution"]["AutomationExecutionStatus"] == "Success"


def test_cli_sts_and_ec2_through_endpoint_variables(aws, sandbox):
    identity = aws("sts", "get-caller-identity", endpoint=False, extra_env={"AWS_ENDPOINT_URL": sandbox.url})
    assert identity["Arn"] == "arn:aws:iam::123456789012:user/sandbox"
    reservations = aws("ec2", "describe-instances", "--filters", "Name=tag:Team,Values=data",
                       endpoint=False, extra_env={"AWS_ENDPOINT_URL_EC2": sandbox.url})["Reservations"]  # fmt: skip
    assert len(reservations) == 3


def test_cli_shows_aws_errors(aws):
    error = aws("ssm", "start-automation-execution", "--document-name", "No-Such-Runbook", fails=True)
    assert "AutomationDefinitionNotFoundException" in error


def test_cli_defaults_against_the_moto_backed_world(aws, sandbox):
    """The CLI's own defaults (describe-instances pages with MaxResults=1000) on EC2, RDS and SQS."""
    instances = [i for r in aws("ec2", "describe-instances")["Reservations"] for i in r["Instances"]]
    assert len(instances) == 9
    volumes = aws("ec2", "describe-volumes")["Volumes"]
    assert {"platform-spare", "data-spare"} <= {t["Value"] for v in volumes for t in v.get("Tags", [])}
    databases = aws("rds", "describe-db-instances")["DBInstances"]
    assert [d["DBInstanceIdentifier"] for d in databases] == ["platform-db"]
    queues = aws("sqs", "list-queues")["QueueUrls"]
    assert sorted(url.rsplit("/", 1)[1] for url in queues) == ["data-jobs", "platform-jobs"]
