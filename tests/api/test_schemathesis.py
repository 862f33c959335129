"""API contract fuzzing against a live server, as two users of different teams (matrix row 30).

gunicorn serves the project on a free loopback port, on the PostgreSQL test database, with the
sandbox as AWS. Schemathesis (4.x CLI) runs every check it has against the served OpenAPI schema,
once per user, and any finding fails the test. Then every id that team platform owns is fed to
every operation as a user of team data: all 404, and no list shows them.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.db import connection
from rest_framework.authtoken.models import Token

from automations import services
from automations.models import AutomationRequest
from tests import factories as f
from tests.conftest import require, require_postgres
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
# Per user. About 60 s on a quiet 2-core machine; the bound is for a busy one (load 12 took >105 s).
BUDGET_SECONDS = 240
MAX_EXAMPLES = "12"


@pytest.fixture
def live_server_url(sb, tmp_path):
    require_postgres("gunicorn reads the test database")
    database = connection.settings_dict
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:"
                        f"{database['PORT'] or 5432}/{database['NAME']}",
        "AWS_ENDPOINT_URL": sb.url, "CELERY_BROKER_URL": "memory://", "REDIS_URL": "",
        "DJANGO_DEBUG": "false", "LOG_LEVEL": "WARNING", "DELEGATE_VAR_DIR": str(tmp_path),
        "DELEGATE_LOGIN_LOCKOUT": "false",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set in-process by the browser tests; not for a server
    log = open(tmp_path / "gunicorn.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--threads", "2",
         "--timeout", "30", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("gunicorn did not start:\n" + (tmp_path / "gunicorn.log").read_text()[-3000:])
    yield url
    os.killpg(process.pid, signal.SIGTERM)  # only the process group this fixture started
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()
    server_log = (tmp_path / "gunicorn.log").read_text()
    assert "Traceback" not in server_log, server_log[-5000:]


@pytest.fixture
def platform_data(world, sb):
    """Team platform's objects: requests in several states, one dispatched with its execution, and a
    runbook only platform may request."""
    submitted = services.request_submit(actor=world.alice, team=world.platform, runbook_id=world.runbook.pk,
                                        parameters={"InstanceId": [world.web1]}, justification="fuzz A1")
    running = services.request_submit(actor=world.alice, team=world.platform, runbook_id=world.runbook.pk,
                                      parameters={"InstanceId": [world.web2]}, justification="fuzz A2")
    services.request_approve(request=running, actor=world.bob, comment="go")
    services.request_dispatch(request_id=running.pk)
    running.refresh_from_db()
    assert running.status == "running"
    own = f.RunbookVersionFactory(runbook=f.RunbookFactory(account=world.account, name="Delegate-PlatformOnly",
                                                          owner_kind="self")).runbook
    f.TeamRunbookFactory(team=world.platform, runbook=own)
    theirs = services.request_submit(actor=world.dave, team=world.data, runbook_id=world.runbook.pk,
                                     parameters={"InstanceId": [world.etl1]}, justification="fuzz B1")
    return {"requests": [submitted.pk, running.pk], "execution": running.execution.execution_id,
            "runbook": own.pk, "shared_runbook": world.runbook.pk, "data_request": theirs.pk}


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations_of(schema: dict) -> list[tuple[str, str, dict]]:
    """(path, method, operation) for every operation the served schema documents."""
    return [(path, method, operation) for path, item in schema["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS]


# The schema documents 400 ("the input is not valid") for every operation that takes input; for
# positive data that would accept anything. Only these operations refuse schema-valid input with a
# 400 by a business rule, each with a domain `code` (and the test checks the schema documents it):
# a runbook or version not offered to the caller's teams; a cursor the server did not issue; an
# emergency approval without a reason.
VALID_BUT_REFUSED_400 = {"v1_requests_create", "v1_audit_list", "v1_requests_approve_create",
                         # A reason is required (codes reason_required / empty_comment) although the body's
                         # schema lets `comment` be blank. Better: a schema that says so (not changed: the
                         # API's codes for these refusals are relied upon by tests/services/test_decisions.py).
                         "v1_requests_reject_create", "v1_requests_send_back_create",
                         "v1_requests_comments_create",
                         # Requests that are not one identical low-risk group the caller may approve
                         # (bulk_size when fewer than two are found, bulk_not_low_risk, bulk_not_identical).
                         "v1_requests_bulk_approve_create"}
# Business refusals any operation may give schema-valid data where its schema documents them:
# another team's or an unknown id (404), not this caller's decision (403), no longer in that status (409).
BUSINESS_REFUSALS = ("403", "404", "409")


def documented_refusals(operation: dict) -> list[str]:
    """The refusals a schema-valid request may get from this operation: the business ones its
    schema documents (401 is not one: every call here carries a valid token)."""
    documented = operation.get("responses", {})
    allowed = [code for code in BUSINESS_REFUSALS if code in documented]
    if operation["operationId"] in VALID_BUT_REFUSED_400:
        assert "400" in documented, f"{operation['operationId']} refuses valid input with 400 undocumented"
        allowed.insert(0, "400")
    return allowed


def _config(ids: dict, schema: dict) -> str:
    """schemathesis.toml, one block per operation: real ids for path parameters half of the time (so
    fuzzing reaches past the lookup), and strict positive-data acceptance: a schema-valid request
    must get a 2xx, or a refusal the schema documents for that operation (business rules no
    schema can express: the runbook is not offered, the request is no longer in that status)."""
    request_ids = ", ".join(str(pk) for pk in [*ids["requests"], ids["data_request"]])
    blocks = [f"""
[checks.negative_data_rejection]
# The defaults, plus 414: gunicorn refuses a request line over 4094 bytes before Django sees it.
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", "429", "5xx"]

[dictionaries.requests]
values = [{request_ids}]
[dictionaries.runbooks]
values = [{ids["runbook"]}, {ids["shared_runbook"]}]
[dictionaries.executions]
values = ["{ids["execution"]}"]
"""]
    dictionaries = {"/api/v1/requests/{id}/": ("id", "requests"), "/api/v1/runbooks/{id}/": ("id", "runbooks"),
                    "/api/v1/executions/{execution_id}/": ("execution_id", "executions")}
    for path, _method, operation in operations_of(schema):
        accepted = ", ".join(f'"{code}"' for code in ["2xx", *documented_refusals(operation)])
        block = f"""
[[operations]]
include-operation-id = "{operation["operationId"]}"
checks.positive_data_acceptance.expected-statuses = [{accepted}]
"""
        for prefix, (name, dictionary) in dictionaries.items():
            if path.startswith(prefix):
                block += f'parameters = {{ "path.{name}" = {{ dictionary = "{dictionary}", probability = 0.6 }} }}\n'
        blocks.append(block)
    return "".join(blocks)


def _schemathesis(url: str, token: str, report_dir: Path, ids: dict, schema: dict,
                  phases: str) -> subprocess.CompletedProcess:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    require(st is not None, "schemathesis 4.x (pip install -e .[test])")
    config = report_dir / "schemathesis.toml"
    config.write_text(_config(ids, schema))
    return subprocess.run(
        [st, "--config-file", str(config), "run", f"{url}/api/schema/?format=json", "--url", url,
         "--checks", "all",
         "--header", f"Authorization: Token {token}",
         "--phases", phases, "--max-examples", MAX_EXAMPLES,
         "--workers", "1", "--seed", "20261128", "--request-timeout", "10", "--max-response-time", "5",
         "--generation-database", "none", "--no-color", "--suppress-health-check", "too_slow",
         "--report", "junit,json", "--report-dir", str(report_dir),
         "--report-json-path", str(report_dir / "report.json")],
        cwd=report_dir, capture_output=True, text=True, timeout=BUDGET_SECONDS + 30,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
    )


@pytest.mark.integration
@pytest.mark.timeout(2 * BUDGET_SECONDS + 120)
@pytest.mark.postgres(reason="gunicorn reads the test database")
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_nothing_and_no_team_sees_another_teams_data(world, platform_data, live_server_url,
                                                                        tmp_path):
    tokens = {user.username: Token.objects.create(user=user).key for user in (world.bob, world.erin)}
    schema = requests.get(f"{live_server_url}/api/schema/?format=json", timeout=10).json()
    operation_count = len(operations_of(schema))
    assert operation_count >= 10, f"the served schema documents only {operation_count} operations"
    started = time.monotonic()
    # bob leads platform, erin leads data. The coverage phase (every boundary of every parameter,
    # deterministic) runs once; random fuzzing and stateful sequences run as both users, with ids
    # of both teams mixed into the path parameters.
    phases = {"bob": "examples,coverage,fuzzing,stateful", "erin": "examples,fuzzing,stateful"}
    generated = {}
    for username, token in tokens.items():
        report = tmp_path / f"schemathesis-{username}"
        report.mkdir()
        result = _schemathesis(live_server_url, token, report, platform_data, schema, phases[username])
        (report / "output.txt").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, f"schemathesis as {username}:\n{result.stdout[:20000]}\n{result.stderr[-3000:]}"
        # How much ran, from schemathesis's own report: a run that tested nothing also exits 0.
        summary = json.loads((report / "report.json").read_text())
        assert summary["operations"]["tested"] == operation_count, summary["operations"]
        assert summary["operations"]["errored"] == 0 and summary["test_cases"]["errored"] == 0, summary
        generated[username] = summary["test_cases"]["generated"]
        # At least MAX_EXAMPLES fuzzed cases per operation (examples, coverage and stateful add more).
        assert generated[username] >= operation_count * int(MAX_EXAMPLES), (username, generated[username],
                                                                            operation_count)
    fuzzing_seconds = time.monotonic() - started

    # Cross-team: every operation that takes an id, with platform's ids, as erin of team data.
    outsider = requests.Session()
    outsider.trust_env = False
    outsider.headers["Authorization"] = f"Token {tokens['erin']}"
    values = {"id": platform_data["requests"], "execution_id": [platform_data["execution"]]}
    tried = 0
    for path, operations in schema["paths"].items():
        if "{" not in path:
            continue
        for method in operations:
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            ids = platform_data["runbook"] if path.startswith("/api/v1/runbooks/") else None
            candidates = [ids] if ids else next(v for k, v in values.items() if "{" + k + "}" in path)
            for value in candidates:
                url = live_server_url + path.replace("{id}", str(value)).replace("{execution_id}", str(value))
                response = outsider.request(method, url, json={} if method != "get" else None, timeout=10)
                assert response.status_code in (404, 405), (method, url, response.status_code, response.text[:300])
                if response.status_code == 404:
                    assert response.json() == {"code": "not_found", "detail": "Not found."}
                tried += 1
    assert tried >= 10

    listed = outsider.get(f"{live_server_url}/api/v1/requests/", timeout=10).json()["results"]
    assert not {item["id"] for item in listed} & set(platform_data["requests"])
    events = outsider.get(f"{live_server_url}/api/v1/audit/", timeout=10).json()["results"]
    assert not {event["request"] for event in events} & set(platform_data["requests"])
    export = outsider.get(f"{live_server_url}/api/v1/audit/export/?format=jsonl", timeout=10)
    assert export.status_code == 200
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and friends, which splitlines() breaks on.
    lines = [json.loads(line) for line in export.text.split("\n") if line]
    assert lines and not {line["request_id"] for line in lines} & set(platform_data["requests"])
    # And platform's own lead does see them (so the checks above could fail).
    insider = requests.get(f"{live_server_url}/api/v1/requests/", timeout=10,
                           headers={"Authorization": f"Token {tokens['bob']}"}).json()["results"]
    assert set(platform_data["requests"]) <= {item["id"] for item in insider}
    assert AutomationRequest.objects.filter(pk__in=platform_data["requests"], team=world.platform).count() == 2
    print(f"schemathesis: {fuzzing_seconds:.0f}s for two users, {operation_count} operations, "
          f"test cases generated: {generated}")
