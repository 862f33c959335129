"""The duplicate/overlap guard (form, API, queue) and the per-target lock at dispatch."""
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from automations import services
from automations.models import AuditEvent, AutomationRequest, DispatchOutbox
from automations.services import notifications
from tests.processes import wait_until

Status = AutomationRequest.Status


def _form(world) -> dict:
    return {"version": "default", "mode": "simple", "param_InstanceId": [world.web1], "justification": "CHG-1 restart"}


class TestDuplicateWarning:
    def test_the_form_warns_links_and_submits_only_when_confirmed(self, world, submit, client):
        first = submit()
        client.force_login(world.alice)
        url = reverse("automations:request_new", args=[world.platform_policy.runbook_id])
        preview = client.post(url, {**_form(world), "preview": "1"})
        page = preview.content.decode()
        assert "Already requested on the same targets" in page
        assert f'href="/requests/{first.pk}/"' in page and "Submit anyway" in page
        fingerprint = preview.context["preview"].fingerprint
        # Back + Submit (the double request): refused, nothing saved, the warning stays.
        refused = client.post(url, {**_form(world), "submit": "1", "previewed": fingerprint})
        assert refused.status_code == 200 and "Not submitted yet" in refused.content.decode()
        assert AutomationRequest.objects.count() == 1
        confirmed = client.post(url, {**_form(world), "submit": "1", "previewed": fingerprint,
                                      "confirm_overlap": "on"})
        assert confirmed.status_code == 302
        second = AutomationRequest.objects.exclude(pk=first.pk).get()
        event = AuditEvent.objects.get(request=second, action="request.submitted")
        assert event.details["overlapping"] == [first.pk]

    def test_other_targets_or_a_finished_request_do_not_warn(self, world, submit, client):
        first = submit()
        services.request_withdraw(request=first, actor=world.alice)
        submit(parameters={"InstanceId": [world.web2]})
        client.force_login(world.alice)
        url = reverse("automations:request_new", args=[world.platform_policy.runbook_id])
        page = client.post(url, {**_form(world), "preview": "1"}).content.decode()
        assert "Already requested on the same targets" not in page

    def test_the_api_answers_a_stable_code_unless_confirmed(self, world, submit):
        first = submit()
        api = APIClient()
        api.force_login(world.alice)
        body = {"runbook": world.runbook.pk, "parameters": {"InstanceId": [world.web1]}, "justification": "x"}
        refused = api.post("/api/v1/requests/", body, format="json")
        assert refused.status_code == 409, refused.content
        assert refused.json()["code"] == "overlapping_request"
        assert refused.json()["errors"]["overlapping_requests"] == [str(first.pk)]
        created = api.post("/api/v1/requests/", {**body, "confirm_overlap": True}, format="json")
        assert created.status_code == 201, created.content

    def test_the_queue_and_the_request_page_flag_the_overlap(self, world, submit, client):
        first = submit()
        second = submit()
        client.force_login(world.bob)
        queue = client.get("/approvals/").content.decode()
        assert "overlaps</span> same targets as" in queue
        assert f'href="/requests/{first.pk}/">#{first.pk}</a>' in queue
        assert f'href="/requests/{second.pk}/">#{second.pk}</a>' in queue
        page = client.get(f"/requests/{second.pk}/").content.decode()
        assert "Overlaps:" in page and f'href="/requests/{first.pk}/"' in page


class TestTargetLock:
    def test_one_run_per_target_waits_for_the_running_one(self, world, submit, sb, settings, monkeypatch):
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        settings.DELEGATE_TARGET_LOCK_RETRY_SECONDS = 0
        world.platform_policy.one_run_per_target = True
        world.platform_policy.save()
        first = services.request_approve(request=submit(), actor=world.bob)
        second = services.request_approve(request=submit(), actor=world.bob)
        assert services.request_dispatch(request_id=first.pk) == "started"
        assert AutomationRequest.objects.get(pk=first.pk).status == Status.RUNNING
        assert services.request_dispatch(request_id=second.pk) == "locked"
        assert services.request_dispatch(request_id=second.pk) == "locked"
        assert AutomationRequest.objects.get(pk=second.pk).status == Status.APPROVED
        waits = AuditEvent.objects.filter(request=second, action="dispatch.waiting_for_target")
        assert waits.count() == 1  # once per holder, not per retry
        assert waits.get().details == {"held_by": [first.pk], "targets": [world.web1]}
        assert "target lock held by #" in DispatchOutbox.objects.get(pk=second.pk).last_error

        def first_done():
            services.execution_statuses_sync()
            return AutomationRequest.objects.get(pk=first.pk).is_terminal
        wait_until(first_done, timeout=60, what="the first run to finish")
        assert services.request_dispatch(request_id=second.pk) == "started"

    def test_without_the_setting_overlapping_runs_start_together(self, world, submit, sb, monkeypatch):
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        first = services.request_approve(request=submit(), actor=world.bob)
        second = services.request_approve(request=submit(), actor=world.bob)
        assert services.request_dispatch(request_id=first.pk) == "started"
        assert services.request_dispatch(request_id=second.pk) == "started"


class TestOneValidationPerPost:
    """Issue 17: a refused submit used to validate the whole request again to show the preview
    (up to three request_submit runs per POST); the service now hands back what it built."""

    @pytest.fixture
    def counted(self, monkeypatch):
        calls = []
        original = services.request_submit

        def counting(**kwargs):
            calls.append(kwargs.get("preview", False))
            return original(**kwargs)
        monkeypatch.setattr(services, "request_submit", counting)
        return calls

    def test_a_submit_refused_for_an_overlap_validates_once_and_still_shows_the_preview(
            self, world, submit, client, counted):
        first = submit()
        client.force_login(world.alice)
        url = reverse("automations:request_new", args=[world.platform_policy.runbook_id])
        counted.clear()
        refused = client.post(url, {**_form(world), "submit": "1"})
        assert refused.status_code == 200 and refused.context["preview"] is not None
        assert f'href="/requests/{first.pk}/"' in refused.content.decode()
        assert counted == [False]

    def test_a_submit_that_changed_since_its_preview_validates_once_and_shows_the_new_one(
            self, world, client, counted):
        client.force_login(world.alice)
        url = reverse("automations:request_new", args=[world.platform_policy.runbook_id])
        counted.clear()
        refused = client.post(url, {**_form(world), "submit": "1", "previewed": "0" * 64})
        assert refused.status_code == 200 and counted == [False]
        preview = refused.context["preview"]
        assert preview is not None and preview.fingerprint != "0" * 64
        assert AutomationRequest.objects.count() == 0


def test_overlaps_among_pairs_only_open_requests_of_the_same_runbook_account_region_and_target(world, submit):
    """selectors.overlaps_among (the approval queue's flags), checked against the rule it states."""
    from automations import selectors
    from automations.models import AutomationRequest

    a = submit(parameters={"InstanceId": [world.web1, world.web2]})
    b = submit(parameters={"InstanceId": [world.web2]})
    c = submit(parameters={"InstanceId": [world.web1]})
    other_region = submit(parameters={"InstanceId": [world.web1]})
    AutomationRequest.objects.filter(pk=other_region.pk).update(region="us-east-1")
    closed = submit(parameters={"InstanceId": [world.web1]})
    AutomationRequest.objects.filter(pk=closed.pk).update(status=AutomationRequest.Status.REJECTED)
    items = list(AutomationRequest.objects.filter(pk__in=[a.pk, b.pk, c.pk, other_region.pk]))
    found = selectors.overlaps_among(items)
    assert found[a.pk] == [b.pk, c.pk]
    assert found[b.pk] == [a.pk]
    assert found[c.pk] == [a.pk]
    assert found[other_region.pk] == []
    assert closed.pk not in found[a.pk] + found[b.pk] + found[c.pk]


def test_the_queue_names_five_overlapping_requests_and_counts_the_rest(world, submit, client):
    items = [submit() for _ in range(8)]  # all on web-1: each overlaps the other seven
    client.force_login(world.bob)
    html = client.get("/approvals/").content.decode()
    assert "and 2 more" in html  # 7 others: five linked, two counted
    row = html[html.index(f'href="/requests/{items[0].pk}/?from=approvals">#{items[0].pk}</a></td>'):]
    row = row[:row.index("</tr>")]
    assert row.count('href="/requests/') == 1 + 5 and "and 2 more" in row  # its own link and five others
