"""Every object outside the caller's scope answers 404, in the UI and the API alike (matrix row 16).

The sweep walks every URL pattern of the project. A new route that takes an id fails
test_every_route_with_ids_is_in_the_sweep until it is added to OBJECTS or LISTINGS below.
"""
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from automations.models import ApprovalDelegation, AuditEvent, Execution, LocationExecution, StepApproval
from tests import factories as f
from tests.security_helpers import project_routes

MARKER = "scope-marker-7f3c9d"  # in team platform's request: must never reach anyone outside it
MISSING = 10**9  # an id that does not exist

# Route name → which of team platform's objects fills each parameter.
OBJECTS = {
    "automations:request_new": {"pk": "runbook"},
    "automations:picker": {"pk": "runbook", "parameter": "=InstanceId"},
    "automations:runbook_detail": {"pk": "runbook"},
    "automations:request_detail": {"pk": "request"},
    "automations:request_status": {"pk": "request"},
    "automations:request_location": {"pk": "request", "execution_id": "location"},
    "automations:request_approve": {"pk": "request"},
    "automations:request_reject": {"pk": "request"},
    "automations:request_withdraw": {"pk": "request"},
    "automations:request_send_back": {"pk": "request"},
    "automations:request_comment": {"pk": "request"},
    "automations:request_amend": {"pk": "request"},
    "automations:request_cancel": {"pk": "request"},
    "automations:request_rerun": {"pk": "request"},
    "automations:step_decide": {"pk": "step"},
    "automations:delegation_revoke": {"pk": "delegation"},
    "automations:audit_event": {"sequence": "event"},
    "automations:audit_request": {"pk": "request"},
    "api:runbook_detail": {"pk": "runbook"},
    "api:request_detail": {"pk": "request"},
    "api:request_content": {"pk": "request"},
    "api:request_approve": {"pk": "request"},
    "api:request_reject": {"pk": "request"},
    "api:request_send_back": {"pk": "request"},
    "api:request_comment": {"pk": "request"},
    "api:request_withdraw": {"pk": "request"},
    "api:request_cancel": {"pk": "request"},
    "api:execution_detail": {"execution_id": "execution"},
}
# Routes whose parameter is a search key, not an object: the page exists for everyone allowed to
# search, and must show nothing of other teams.
LISTINGS = {
    "automations:audit_resource": {"resource_id": "resource"},
    # The ops view's exports: a figure's name, not an object; scoped like the page (leads: their teams).
    "automations:ops_export": {"figure": "=busiest-targets", "fmt": "=csv"},
}


@pytest.fixture
def platform(world, submit):
    """Team platform's objects: a request with a marker, its execution and aws:approve step, a
    runbook only platform may request, a delegation of bob's, and the audit event of the submit."""
    request = submit(justification=MARKER)
    execution = Execution.objects.create(request=request, execution_id="5c2c1c1e-0000-4000-8000-00000000a11c")
    step = StepApproval.objects.create(execution=execution, step_execution_id="step-1", step_name="approve")
    location = LocationExecution.objects.create(request=request, execution_id="5c2c1c1e-0000-4000-8000-00000000b0c1",
                                                account_id="300000010001", region="eu-west-1", aws_status="Failed")
    own_runbook = f.RunbookVersionFactory(
        runbook=f.RunbookFactory(account=world.account, name="Delegate-PlatformOnly", owner_kind="self")).runbook
    f.TeamRunbookFactory(team=world.platform, runbook=own_runbook)
    delegation = ApprovalDelegation.objects.create(delegator=world.bob, delegate=world.frank, team=world.platform,
                                                   ends_at=timezone.now() + timedelta(days=1))
    return SimpleNamespace(
        request=request.pk, policy=world.platform_policy.pk, step=step.pk, delegation=delegation.pk,
        runbook=own_runbook.pk, execution=execution.execution_id, resource=world.web1,
        location=location.execution_id,
        event=AuditEvent.objects.get(request=request, action="request.submitted").sequence,
    )


def _values(route, platform, *, missing=False) -> dict:
    spec = {**OBJECTS, **LISTINGS}[route.name]
    values = {}
    for name, source in spec.items():
        if source.startswith("="):
            values[name] = source[1:]
        elif missing:
            values[name] = "00000000-0000-4000-8000-000000000000" if name == "execution_id" else \
                ("i-0000000000000000f" if name == "resource_id" else MISSING)
        else:
            values[name] = getattr(platform, source)
    return values


def _clients(user) -> dict:
    """{is_api: client} logged in as `user`: the API client with DRF auth, the page client with a session."""
    api = APIClient()
    api.force_authenticate(user)
    pages = Client()
    pages.force_login(user)
    return {True: api, False: pages}


def _content(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_every_route_with_ids_is_in_the_sweep():
    unswept = [route.template for route in project_routes()
               if route.params and route.name not in OBJECTS and route.name not in LISTINGS]
    assert unswept == [], "add these routes to OBJECTS or LISTINGS in tests/security/test_scope.py"
    for name, spec in {**OBJECTS, **LISTINGS}.items():
        route = next((r for r in project_routes() if r.name == name), None)
        assert route is not None and set(route.params) == set(spec), name


@pytest.mark.parametrize("outsider", ["erin", "dave"])  # lead and member of team data
def test_other_teams_objects_are_404_for_every_method(world, platform, outsider):
    user = getattr(world, outsider)
    changes = AuditEvent.objects.exclude(action__startswith="authz.").exclude(action__startswith="login.")
    before = changes.count()
    clients = _clients(user)
    for route in project_routes():
        if route.name not in OBJECTS:
            continue
        client = clients[route.is_api]
        theirs, missing = route.url(**_values(route, platform)), route.url(**_values(route, platform, missing=True))
        for method in ("get", "post"):
            kwargs = {"format": "json"} if route.is_api else {}
            answer = getattr(client, method)(theirs, {}, **kwargs)
            baseline = getattr(client, method)(missing, {}, **kwargs)
            # Indistinguishable from an id that does not exist: no oracle for enumerating ids.
            assert answer.status_code == baseline.status_code, (method, theirs, answer.status_code)
            if outsider == "erin" or answer.status_code != 403:
                # A lead reaches every page type, so only the object can be missing; a member may be
                # refused a whole page type (403 whatever the id). 405: the method, whatever the id.
                assert answer.status_code in (404, 405), (method, theirs, answer.status_code)
            assert MARKER.encode() not in _content(answer)
            if route.is_api and answer.status_code == 404:
                assert answer.json() == {"code": "not_found", "detail": "Not found."}
    # Nothing changed (denials may be audited as authz.*; the test client's logins as login.ok).
    assert changes.count() == before


def test_the_sweep_uses_objects_their_team_can_reach(world, platform):
    # Otherwise the 404s above would prove nothing: bob, platform's lead, gets each of them.
    clients = _clients(world.bob)
    for route in project_routes():
        if route.name not in OBJECTS:
            continue
        client = clients[route.is_api]
        url = route.url(**_values(route, platform))
        response = client.get(url)
        if response.status_code == 405:
            continue  # POST-only actions; their lookup is the same selector as the GET pages above
        assert response.status_code != 404, url


@pytest.mark.parametrize("outsider", ["erin", "dave"])
def test_no_page_or_list_shows_another_teams_data(world, platform, outsider):
    clients = _clients(getattr(world, outsider))
    for route in project_routes():
        if route.name in OBJECTS or route.name in ("logout", "oidc_authentication_init",
                                                   "oidc_authentication_callback"):
            continue
        url = route.url(**_values(route, platform)) if route.name in LISTINGS else route.url()
        for query in ("", "?scope=all", "?format=jsonl"):
            response = clients[route.is_api].get(url + query)
            assert response.status_code < 500, url
            assert MARKER.encode() not in _content(response), (url + query, response.status_code)


def test_admin_pages_of_team_objects_need_staff(world, platform):
    client = Client()
    client.force_login(world.erin)
    response = client.get(f"/admin/automations/automationrequest/{platform.request}/change/")
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.parametrize("outsider", ["erin", "dave"])
def test_the_probers_own_audit_trail_does_not_answer_what_the_404_hid(world, platform, outsider):
    user = getattr(world, outsider)
    api = _clients(user)[True]
    for pk in (platform.request, MISSING):  # one real id of platform's, one that does not exist
        assert api.get(f"/api/v1/requests/{pk}/").status_code == 404
        assert api.post(f"/api/v1/requests/{pk}/approve/", {}, format="json").status_code == 404
    trail = api.get("/api/v1/audit/?limit=500").json()["results"]
    export = b"".join(api.get("/api/v1/audit/export/?format=jsonl").streaming_content).decode()
    assert not [event for event in trail if event["team"] == "platform" or event["request"] == platform.request]
    assert not [event for event in trail if event["action"].startswith("authz.")]  # existing or not: no oracle
    assert f'"request_id":{platform.request}' not in export.replace(" ", "") and '"platform"' not in export
    # The probed team's lead (and the auditors) do see the probe of their request.
    seen = _clients(world.bob)[True].get("/api/v1/audit/?action=authz.denied").json()["results"]
    assert {(event["actor_name"], event["request"]) for event in seen} == {(outsider, platform.request)}
