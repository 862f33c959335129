"""A policy may require a ticket reference of a shape: its own field on the form and in the API,
refused in plain words (and a stable code), bound by the fingerprint and written to the audit."""
from django.urls import reverse
from rest_framework.test import APIClient

from automations import services
from automations.models import AuditEvent, AutomationRequest


def _require_ticket(world, pattern=r"^CHG[0-9]{7}$", hint=""):
    world.platform_policy.ticket_pattern = pattern
    world.platform_policy.ticket_hint = hint
    world.platform_policy.save()


def _post(client, world, **extra):
    url = reverse("automations:request_new", args=[world.platform_policy.runbook_id])
    data = {"version": "default", "mode": "simple", "param_InstanceId": [world.web1], "justification": "patch", **extra}
    return client.post(url, data)


def test_the_form_shows_the_field_only_when_the_policy_asks_for_one(world, sb, client):
    client.force_login(world.alice)
    url = reverse("automations:request_new", args=[world.platform_policy.runbook_id])
    assert 'name="ticket_reference"' not in client.get(url).content.decode()
    _require_ticket(world)
    page = client.get(url).content.decode()
    assert 'name="ticket_reference"' in page
    assert "“CHG”, then 7 characters from 0–9" in page  # the pattern in words
    _require_ticket(world, hint="a change ticket like CHG0001234")
    assert "a change ticket like CHG0001234" in client.get(url).content.decode()


def test_a_missing_or_non_matching_ticket_is_refused_with_a_form_message(world, sb, client):
    _require_ticket(world, hint="a change ticket like CHG0001234")
    client.force_login(world.alice)
    missing = _post(client, world, preview="1")
    assert missing.context["preview"] is None
    assert "Give a change ticket like CHG0001234" in missing.content.decode()
    assert 'href="#id_ticket_reference"' in missing.content.decode()
    wrong = _post(client, world, preview="1", ticket_reference="CHG12")
    assert wrong.context["preview"] is None
    assert "CHG12 is not a change ticket like CHG0001234" in wrong.content.decode()
    assert r"[0-9]{7}" not in wrong.content.decode().split("<details")[0]  # words, not the regex
    fine = _post(client, world, preview="1", ticket_reference=" CHG0001234 ")
    assert fine.context["preview"] is not None and fine.context["preview"].ticket_reference == "CHG0001234"
    assert not AutomationRequest.objects.exists()


def test_the_api_refuses_with_stable_codes_and_changes_nothing(world, sb):
    _require_ticket(world)
    api = APIClient()
    api.force_authenticate(world.alice)
    body = {"runbook": world.runbook.pk, "team": "platform", "parameters": {"InstanceId": [world.web1]},
            "justification": "patch"}
    missing = api.post("/api/v1/requests/", body, format="json")
    assert missing.status_code == 400 and missing.json()["code"] == "ticket_required"
    assert "ticket_reference" in missing.json()["errors"]
    wrong = api.post("/api/v1/requests/", {**body, "ticket_reference": "CHG0001234; DROP"}, format="json")
    assert wrong.status_code == 400 and wrong.json()["code"] == "ticket_mismatch"
    assert not AutomationRequest.objects.exists()
    created = api.post("/api/v1/requests/", {**body, "ticket_reference": "CHG0001234"}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["ticket_reference"] == "CHG0001234"


def test_the_ticket_is_fingerprinted_and_audited(world, sb):
    _require_ticket(world)
    common = dict(actor=world.alice, team=world.platform, runbook_id=world.runbook.pk,
                  parameters={"InstanceId": [world.web1]}, justification="patch")
    one = services.request_submit(preview=True, ticket_reference="CHG0001234", **common)
    two = services.request_submit(preview=True, ticket_reference="CHG0009999", **common)
    assert one.fingerprint != two.fingerprint  # an approval of one ticket's change is not another's
    request = services.request_submit(ticket_reference="CHG0001234", **common)
    assert request.fingerprint == one.fingerprint
    event = AuditEvent.objects.get(action="request.submitted", request_id=request.pk)
    assert event.details["ticket_reference"] == "CHG0001234"


def test_a_request_without_a_ticket_keeps_its_fingerprint(world, sb):
    """Requests stored before tickets existed must still match their fingerprint at dispatch."""
    from automations.runbooks import fingerprint_for

    request = services.request_submit(actor=world.alice, team=world.platform, runbook_id=world.runbook.pk,
                                      parameters={"InstanceId": [world.web1]}, justification="patch")
    assert request.ticket_reference == ""
    stored = AutomationRequest.objects.get(pk=request.pk)
    assert fingerprint_for(stored) == stored.fingerprint
