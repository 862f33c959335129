"""The state file across restarts, the HTTP control API, and the `python -m` entry point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from sandbox import Sandbox
from sandbox.inventory import seeded_id

pytestmark = []

REPO = Path(__file__).resolve().parents[2]
# Approvers are enforced (as AWS does): the test clients are user "sandbox" or the DelegateDispatch role.
APPROVAL_PARAMS = {"Approvers": ["sandbox", "DelegateDispatch"], "SNSTopicArn": ["arn:aws:sns:eu-west-1:123456789012:AutomationX"]}


def clients(sb: Sandbox, credentials: dict | None = None):
    keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    if credentials:
        keys = {
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
        }
    make = lambda service: boto3.client(service, endpoint_url=sb.url, region_name="eu-west-1", **keys)
    return make("ssm"), make("ec2"), make("sts")


def test_state_survives_a_restart(tmp_path):
    state_file = str(tmp_path / "sandbox.json")
    first = Sandbox(port=0, time_scale=50, state_file=state_file).start()
    ssm, _, sts = clients(first)
    credentials = sts.assume_role(
        RoleArn="arn:aws:iam::123456789012:role/DelegateDispatch",
        RoleSessionName="req-7",
        SourceIdentity="dave",
    )["Credentials"]
    content = {
        "schemaVersion": "0.3",
        "mainSteps": [{"name": "s", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}}],
    }
    ssm.create_document(Name="Team-Kept", DocumentType="Automation", Content=json.dumps(content))
    instance = seeded_id("i", "eu-west-1", "etl-1")  # a running data-team instance
    token = str(uuid.uuid4())
    done_id = ssm.start_automation_execution(
        DocumentName="AWS-StopEC2Instance", Parameters={"InstanceId": [instance]}, ClientToken=token
    )["AutomationExecutionId"]
    first.wait_for_execution(done_id, timeout=10)
    ssm_as_dave, _, _ = clients(first, credentials)
    waiting_id = ssm_as_dave.start_automation_execution(
        DocumentName="AWS-TerminateEC2InstanceWithApproval",
        Parameters={"InstanceId": [instance], **APPROVAL_PARAMS},
    )["AutomationExecutionId"]
    first.wait_for_execution(waiting_id, statuses=("Waiting",), timeout=5)
    first.stop()
    assert json.loads(Path(state_file).read_text())["format"] == 1

    second = Sandbox(port=0, time_scale=50, state_file=state_file).start()
    try:
        ssm, _, _ = clients(second)
        assert ssm.describe_document(Name="Team-Kept")["Document"]["Owner"] == "123456789012"
        # The state file keeps Delegate's state (documents, executions, tokens, sessions); moto's
        # AWS resources are seeded afresh on every start (sandbox/README.md, "Persistence").
        assert second.instance_state(instance) == "running"
        assert second.execution(done_id)["AutomationExecutionStatus"] == "Success"
        again = ssm.start_automation_execution(
            DocumentName="AWS-StopEC2Instance", Parameters={"InstanceId": [instance]}, ClientToken=token
        )
        assert again["AutomationExecutionId"] == done_id  # the idempotency token was remembered
        ssm_as_dave, _, sts_as_dave = clients(second, credentials)
        assert sts_as_dave.get_caller_identity()["Arn"].endswith("assumed-role/DelegateDispatch/req-7")
        # The waiting execution resumes where it was: approve it and it terminates the instance.
        ssm_as_dave.send_automation_signal(AutomationExecutionId=waiting_id, SignalType="Approve")
        finished = second.wait_for_execution(waiting_id, timeout=10)
        assert finished["AutomationExecutionStatus"] == "Success"
        assert finished["SourceIdentity"] == "dave"
        assert second.instance_state(instance) == "terminated"
    finally:
        second.stop()


def test_running_execution_resumes_after_restart(tmp_path):
    state_file = str(tmp_path / "sandbox.json")
    first = Sandbox(port=0, time_scale=20, state_file=state_file).start()
    ssm, _, _ = clients(first)
    instance = seeded_id("i", "eu-west-1", "web-1")
    execution_id = ssm.start_automation_execution(
        DocumentName="AWS-RestartEC2Instance", Parameters={"InstanceId": [instance]}
    )["AutomationExecutionId"]
    first.wait_for_execution(execution_id, statuses=("InProgress",), timeout=5)
    first.stop()
    second = Sandbox(port=0, time_scale=20, state_file=state_file).start()
    try:
        finished = second.wait_for_execution(execution_id, timeout=10)
        assert finished["AutomationExecutionStatus"] == "Success"
        assert second.state_history(instance) == ["running", "stopping", "stopped", "pending", "running"]
    finally:
        second.stop()


def test_state_is_saved_while_running(tmp_path):
    state_file = tmp_path / "sandbox.json"
    sb = Sandbox(port=0, time_scale=50, state_file=str(state_file)).start()
    try:
        ssm, _, _ = clients(sb)
        content = {
            "schemaVersion": "0.3",
            "mainSteps": [{"name": "s", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}}],
        }
        ssm.create_document(Name="Team-Saved", DocumentType="Automation", Content=json.dumps(content))
        deadline = time.monotonic() + 5
        while not state_file.exists() or "Team-Saved" not in state_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        sb.stop()


def http(sb: Sandbox, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(sb.url + path, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_control_api(sandbox, client):
    assert http(sandbox, "/_sandbox/health")["status"] == "ok"
    ssm = client("ssm", retries=False)
    knobs = http(
        sandbox,
        "/_sandbox/faults",
        {
            "rate_limits": {"ListDocuments": 1},
            "latency": 0.01,
            "throttle_next": {"GetDocument": 1},
            "fail_step": ["x"],
        },
    )
    assert knobs["rate_limits"] == {"ListDocuments": 1.0} and knobs["queued_errors"] == {"GetDocument": 1}
    assert sandbox.faults.fail_step == {"x"}
    ssm.list_documents()
    with pytest.raises(ssm.exceptions.ThrottlingException):
        ssm.list_documents()
    http(sandbox, "/_sandbox/reset-faults", {})
    ssm.list_documents()
    calls = http(sandbox, "/_sandbox/calls?operation=ListDocuments")["calls"]
    assert [c["error"] for c in calls] == [None, "ThrottlingException", None]
    assert calls[0]["region"] == "eu-west-1" and calls[0]["service"] == "ssm"
    http(
        sandbox,
        "/_sandbox/faults",
        {"error_next": [{"operation": "ListDocuments", "code": "AccessDeniedException"}]},
    )
    with pytest.raises(ssm.exceptions.ClientError) as excinfo:
        ssm.list_documents()
    assert excinfo.value.response["Error"]["Code"] == "AccessDeniedException"
    assert http(sandbox, "/_sandbox/executions")["executions"] == []
    inventory = http(sandbox, "/_sandbox/inventory?region=eu-west-1")["instances"]
    assert len(inventory) == 9 and inventory[0]["History"]
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        http(sandbox, "/_sandbox/faults", {"no_such_knob": 1})
    assert excinfo.value.code == 400


def test_health_says_ready_only_once_the_world_is_seeded():
    """While the world is being seeded, health answers 503 "seeding"; then 200 "ok"."""
    from sandbox import moto_bridge

    moto_bridge.reset()  # a world seeded by an earlier test would be reused without a single call
    sb = Sandbox(port=0, time_scale=50)
    held = sb.faults.block("CreateQueue")  # one of the seeding's calls (world.py)
    sb.start(seed_in_background=True)
    try:
        assert held.arrived.wait(60)
        with pytest.raises(urllib.error.HTTPError) as seeding:
            http(sb, "/_sandbox/health")
        assert seeding.value.code == 503
        body = json.loads(seeding.value.read())
        assert (body["status"], body["world"]) == ("seeding", "seeding")
        held.release()
        assert sb.world_ready.wait(60)
        health = http(sb, "/_sandbox/health")
        assert (health["status"], health["world"]) == ("ok", "ready")
    finally:
        sb.stop()


def test_python_dash_m_serves_until_sigterm(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state_file = tmp_path / "state.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            str(port),
            "--time-scale",
            "20",
            "--state-file",
            str(state_file),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        ssm = boto3.client(
            "ssm",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        assert ssm.describe_document(Name="AWS-RestartEC2Instance")["Document"]["Owner"] == "Amazon"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)  # a stop waits for the world seeding to finish
    assert process.returncode == 0, output
    assert "us-east-1" in json.loads(state_file.read_text())["regions"]
