"""No credential, session token or secret in any log line or audit event (matrix row 26).

A full request → approval → dispatch → status sync runs against the sandbox with every logger at
DEBUG (botocore then prints request headers and STS response bodies). Everything the configured
log handler writes, and every audit row, is scanned for the secrets that really passed by.
"""
import io
import json
import logging
import re

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from automations import tasks
from automations.ops.logging import RedactSecretsFilter, redact
from automations.models import AuditEvent, AutomationRequest

TEST_AWS_SECRET = "test-secret-key-not-real"  # tests/conftest.py
PASSWORD = "delegate-test"  # tests.factories.UserFactory
ASIA = re.compile(r"ASIA[0-9A-Z]{16}")


@pytest.fixture
def debug_logs():
    """Every logger at DEBUG. `out` is what the configured handler (with its redaction) writes;
    `raw` is the same records unfiltered, to show the secrets were really there to leak."""
    root = logging.getLogger()
    configured = [h for h in root.handlers if any(isinstance(f, RedactSecretsFilter) for f in h.filters)]
    assert configured, "settings.LOGGING's console handler (with RedactSecretsFilter) is not installed"
    out, raw = io.StringIO(), io.StringIO()
    previous_streams = [handler.setStream(out) for handler in configured]
    raw_handler = logging.StreamHandler(raw)
    raw_handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root.handlers.insert(0, raw_handler)  # before the redacting handler, which rewrites the record
    names = ["root", "botocore", "boto3", "urllib3", "celery", "django", "automations", "axes",
             *logging.root.manager.loggerDict]
    loggers = {logging.getLogger(name) for name in names} | {root}
    levels = {logger: logger.level for logger in loggers}
    disabled = {logger: logger.disabled for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    yield out, raw
    root.handlers.remove(raw_handler)
    for handler, stream in zip(configured, previous_streams):
        handler.setStream(stream)
    for logger in loggers:
        logger.setLevel(levels[logger])
        logger.disabled = disabled[logger]


def test_full_dispatch_at_debug_writes_no_secret_to_logs_or_audit(world, sb, debug_logs):
    out, raw = debug_logs
    token = io.StringIO()
    call_command("create_api_token", "alice", stdout=token)
    token = token.getvalue().strip()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    created = api.post("/api/v1/requests/", {"runbook": world.runbook.pk, "team": "platform",
                                             "parameters": {"InstanceId": [world.web1]}}, format="json")
    assert created.status_code == 201, created.content
    request_id = created.json()["id"]

    lead = Client()
    assert lead.post("/accounts/login/", {"username": "bob", "password": PASSWORD}).status_code == 302
    session_id = lead.cookies["sessionid"].value
    assert lead.post(f"/requests/{request_id}/approve/", {"comment": "go"}).status_code == 302

    tasks.dispatch_request.apply(args=[request_id])  # as the worker runs it, through Celery's tracer
    execution_id = AutomationRequest.objects.get(pk=request_id).execution.execution_id
    sb.wait_for_execution(execution_id, timeout=30)
    tasks.sync_execution_statuses.apply()
    assert AutomationRequest.objects.get(pk=request_id).status == "succeeded"

    sessions = list(sb.state.sessions.values())
    assert sessions, "the dispatch assumed no role"
    secrets = {token, session_id, TEST_AWS_SECRET, PASSWORD}
    for session in sessions:
        secrets |= {session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"]}

    written, unfiltered = out.getvalue(), raw.getvalue()
    assert "botocore" in written and len(written.splitlines()) > 100  # DEBUG really was on
    # The libraries did emit the credentials: without redaction this test fails.
    assert any(session["SessionToken"] in unfiltered for session in sessions)
    assert ASIA.search(unfiltered)

    assert sorted(secret[:8] + "…" for secret in secrets if secret in written) == []
    assert not ASIA.search(written)

    rows = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert AuditEvent.objects.filter(request_id=request_id, action="dispatch.started").exists()
    assert sorted(secret[:8] + "…" for secret in secrets if secret in rows) == []
    assert not ASIA.search(rows)


@pytest.mark.parametrize("line", [
    "headers={'X-Amz-Security-Token': b'IQoJb3JpZ2luX2VjEXAMPLETOKEN0123456789', 'Authorization': "
    "b'AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEEXAMPLE00/20260101/eu-west-1/ssm/aws4_request, Signature=ab'}",
    "<Credentials><AccessKeyId>ASIAEXAMPLEEXAMPLE00</AccessKeyId><SecretAccessKey>wJalr/K7+MDENG"
    "</SecretAccessKey><SessionToken>FwoGZXIvYXdzEXAMPLE</SessionToken></Credentials>",
    "{'Credentials': {'AccessKeyId': 'ASIAEXAMPLEEXAMPLE00', 'SecretAccessKey': 'wJalr/K7+MDENG', "
    "'SessionToken': 'FwoGZXIvYXdzEXAMPLE'}}",
    '{"event": "{\\"SecretAccessKey\\": \\"wJalr/K7+MDENG\\", \\"SessionToken\\": \\"FwoGZXIvYXdzEXAMPLE\\"}"}',
    "x-amz-security-token:FwoGZXIvYXdzEXAMPLE\nhost:127.0.0.1",
    "HTTP_COOKIE: sessionid=k3yk3yk3y; csrftoken=t0k3n",
    "HTTP_AUTHORIZATION='Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b'",
    "aws_secret_access_key = wJalr/K7+MDENG",
])
def test_redaction_covers_each_rendering(line):
    cleaned = redact(line)
    for secret in ("IQoJb3JpZ2luX2VjEXAMPLETOKEN0123456789", "ASIAEXAMPLEEXAMPLE00", "wJalr/K7+MDENG",
                   "FwoGZXIvYXdzEXAMPLE", "k3yk3yk3y", "t0k3n", "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b",
                   "Signature=ab"):
        assert secret not in cleaned, (secret, cleaned)


def test_structlog_events_are_redacted_in_nested_values(debug_logs):
    import structlog

    out, _raw = debug_logs
    structlog.get_logger("automations.test").info("aws call", response={"Credentials": {
        "SecretAccessKey": "wJalr/K7+MDENG", "SessionToken": "FwoGZXIvYXdzEXAMPLE"}},
        note="token ASIAEXAMPLEEXAMPLE00")
    written = out.getvalue()
    assert "aws call" in written
    for secret in ("wJalr/K7+MDENG", "FwoGZXIvYXdzEXAMPLE", "ASIAEXAMPLEEXAMPLE00"):
        assert secret not in written
