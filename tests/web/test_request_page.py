"""The request page's live part: polled until final, 204 when nothing changed, new content when
something did (approval, dispatch, AWS status), and the timeline moves with it."""
import re

import pytest

from automations import services

pytestmark = pytest.mark.django_db


def _poll(client, request_id, shown=""):
    return client.get(f"/requests/{request_id}/status/" + (f"?shown={shown}" if shown else ""))


def _key(response) -> str:
    return re.search(rb'status/\?shown=([0-9a-f]+)"', response.content).group(1).decode()


def test_unchanged_state_answers_204_and_a_change_answers_the_new_state(world, submit, client):
    item = submit(justification="restart web-1")
    client.force_login(world.alice)
    page = client.get(f"/requests/{item.pk}/")
    assert page.status_code == 200
    key = _key(page)
    assert b'hx-trigger="every 5s"' in page.content  # waiting for approval: a slower poll

    assert _poll(client, item.pk, key).status_code == 204
    services.request_approve(request=item, actor=world.bob, comment="fine")
    changed = _poll(client, item.pk, key)
    assert changed.status_code == 200
    assert b"badge-approved" in changed.content
    assert b"Approval added" in changed.content and b"fine" in changed.content  # the timeline moved too
    assert b'hx-trigger="every 2s"' in changed.content  # active: the fast poll
    assert _key(changed) != key
    assert _poll(client, item.pk, _key(changed)).status_code == 204


def test_a_final_request_stops_polling(world, submit, client):
    item = submit()
    services.request_withdraw(request=item, actor=world.alice)
    client.force_login(world.alice)
    page = client.get(f"/requests/{item.pk}/")
    assert b"badge-withdrawn" in page.content
    assert b"hx-get" not in page.content.split(b'id="live"', 1)[1].split(b">", 1)[0]


def test_the_poll_is_scoped_like_the_page(world, submit, client):
    item = submit()
    client.force_login(world.dave)  # another team's requester
    assert _poll(client, item.pk).status_code == 404
    assert _poll(client, item.pk, "0" * 16).status_code == 404


def test_a_failure_or_a_send_back_reason_is_said_once(world, submit, client):
    from automations.models import AutomationRequest, Execution

    failed = submit()
    message = "Step fails when it is Executing. Fail Message: instance i-0abc is in state stopping"
    Execution.objects.create(request=failed, execution_id="6a1d3a5c-0000-4000-8000-0000000000f1",
                             failure_message=message, aws_status="Failed")
    AutomationRequest.objects.filter(pk=failed.pk).update(status="failed", status_reason=message)
    client.force_login(world.alice)
    assert client.get(f"/requests/{failed.pk}/").content.decode().count(message) == 1
    sent_back = submit(parameters={"InstanceId": [world.web2]})
    AutomationRequest.objects.filter(pk=sent_back.pk).update(status="changes_requested",
                                                             status_reason="Use the maintenance window")
    assert client.get(f"/requests/{sent_back.pk}/").content.decode().count("Use the maintenance window") == 1


def test_the_request_time_does_not_go_stale_on_an_open_page(world, submit, client):
    """The header is not refreshed by polling: it says when, not "2 seconds ago"."""
    request = submit()
    client.force_login(world.alice)
    html = client.get(f"/requests/{request.pk}/").content.decode()
    header = html[html.index("<hgroup>"):html.index("</hgroup>")]
    assert f"{request.created_at:%Y-%m-%d %H:%M} UTC</time>" in header
    assert "ago" not in header and "now" not in header
    # Polling stops once a request is final, so "finished …" is a time too.
    from django.utils import timezone

    from automations.models import AutomationRequest

    done = timezone.now()
    AutomationRequest.objects.filter(pk=request.pk).update(status="rejected", finished_at=done)
    html = client.get(f"/requests/{request.pk}/").content.decode()
    assert f'finished <time datetime="{done.isoformat()}" title="{done:%Y-%m-%d %H:%M:%S} UTC">{done:%Y-%m-%d %H:%M} UTC</time>' in html


def test_step_outputs_read_as_text_with_times_not_epoch_numbers(world, submit, client):
    from automations.models import AutomationRequest, Execution

    request = submit()
    Execution.objects.create(
        request=request, execution_id="6a1d3a5c-0000-4000-8000-0000000000f2", aws_status="Success",
        steps=[{"name": "describe", "action": "aws:executeAwsApi", "status": "Success", "failure_message": "",
                "outputs": {"LaunchTime": ["1764770400.0"], "State": ["running"], "StartedMs": ["1764770400000"],
                            "Note": ["<b>x</b>"]}}],
        outputs={"describe.State": ["running"]})
    AutomationRequest.objects.filter(pk=request.pk).update(status="succeeded")
    client.force_login(world.alice)
    html = client.get(f"/requests/{request.pk}/").content.decode()
    assert '<time datetime="2025-12-03T14:00:00+00:00" title="1764770400.0">2025-12-03 14:00:00 UTC</time>' in html
    assert '<time datetime="2025-12-03T14:00:00+00:00" title="1764770400000">2025-12-03 14:00:00 UTC</time>' in html
    assert "State: running" in html and "1764770400.0<" not in html
    assert "Note: &lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
