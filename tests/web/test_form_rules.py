"""The request form: the justification rule (required, ticket pattern), Run at in UTC, and an
error summary that links each problem to its field."""
import datetime as dt

from django.urls import reverse
from django.utils import timezone

from automations import services
from automations.models import AutomationRequest, DispatchOutbox


def _post(client, world, **extra):
    url = reverse("automations:request_new", args=[world.platform_policy.runbook_id])
    data = {"version": "default", "mode": "simple", "param_InstanceId": [world.web1], **extra}
    return client.post(url, data)


def test_justification_required_and_a_ticket_pattern_in_plain_words(world, sb, client):
    world.platform_policy.justification_required = True
    world.platform_policy.ticket_pattern = r"(CHG|INC)-[0-9]+"
    world.platform_policy.ticket_hint = "a change ticket like CHG-1234"
    world.platform_policy.save()
    client.force_login(world.alice)
    empty = _post(client, world, preview="1", justification="—")
    page = empty.content.decode()
    assert 'id="error-summary"' in page and 'href="#id_justification"' in page
    assert "Say why this run is needed" in page
    no_ticket = _post(client, world, preview="1", justification="memory leak").content.decode()
    assert "Give a change ticket like CHG-1234" in no_ticket
    # The rule in words; the regex only on demand, inside the field's "Exact rule" disclosure.
    outside_disclosures = "".join(part.split("</details>")[-1] for part in no_ticket.split("<details"))
    assert r"(CHG|INC)" not in outside_disclosures
    fine = _post(client, world, preview="1", justification="memory leak", ticket_reference="CHG-4711")
    assert fine.context["preview"] is not None and not fine.context["form"].errors


def test_run_at_is_read_as_utc_shown_and_honoured_at_dispatch(world, sb, client):
    client.force_login(world.alice)
    when = (timezone.now() + dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    typed = when.strftime("%Y-%m-%dT%H:%M")
    preview = _post(client, world, preview="1", justification="x", run_at=typed)
    assert f"{when:%Y-%m-%d %H:%M} UTC" in preview.content.decode()
    assert "Run at (UTC, optional)" in preview.content.decode()
    response = _post(client, world, submit="1", justification="x", run_at=typed,
                     previewed=preview.context["preview"].fingerprint)
    assert response.status_code == 302
    request = AutomationRequest.objects.get()
    assert request.run_at == when
    request = services.request_approve(request=request, actor=world.bob)
    assert services.request_dispatch(request_id=request.pk) == "skipped"  # not before its time
    assert AutomationRequest.objects.get(pk=request.pk).status == "approved"
    assert DispatchOutbox.objects.get(pk=request.pk).next_attempt_at == when


def test_the_form_ignores_enter_in_text_boxes_and_focuses_the_preview(world, sb, client):
    client.force_login(world.alice)
    page = client.get(reverse("automations:request_new", args=[world.platform_policy.runbook_id])).content.decode()
    form = page[page.index('novalidate aria-describedby="form-note">'):]
    first_button = form[form.index("<button"):form.index("</button>")]
    assert "disabled" in first_button  # implicit submission (Enter) has no button to press
    preview = _post(client, world, preview="1", justification="x").content.decode()
    assert 'class="preview" tabindex="-1" autofocus' in preview


def test_a_new_policy_asks_for_a_justification_unless_an_admin_turns_it_off(world, sb, client):
    from automations.models import TeamRunbook
    from tests import factories as f

    runbook = f.RunbookVersionFactory(runbook=f.RunbookFactory(account=world.account, name="Our-Restart")).runbook
    policy = TeamRunbook.objects.create(team=world.platform, runbook=runbook)  # as an admin adds it
    assert policy.justification_required
    client.force_login(world.alice)
    url = reverse("automations:request_new", args=[runbook.pk])
    blank = client.post(url, {"version": "default", "mode": "simple", "param_InstanceId": [world.web1],
                              "preview": "1", "justification": " "})
    assert blank.context["preview"] is None and "Say why this run is needed" in blank.content.decode()
    page = client.get(url).content.decode()
    assert 'id="id_justification"' in page and "Justification *" in page.replace('<span aria-hidden="true">', "").replace("</span>", "")
    TeamRunbook.objects.filter(pk=policy.pk).update(justification_required=False)
    fine = client.post(url, {"version": "default", "mode": "simple", "param_InstanceId": [world.web1],
                             "preview": "1", "justification": ""})
    assert fine.context["preview"] is not None
