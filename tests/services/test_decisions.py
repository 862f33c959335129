"""Decisions with reasons (reject, send back, amend), the comment thread, consequences shown
(cancel/withdraw dialogs, targets after a failure, the undoing runbook) and names on pages and mail."""
import boto3
import pytest
from django.core import mail
from django.urls import reverse
from rest_framework.test import APIClient

from automations import services
from automations.errors import InvalidRequest, NotAllowed
from automations.models import AuditEvent, AutomationRequest, NotificationDelivery
from automations.services import notifications
from tests import factories as f
from tests.processes import wait_until

Status = AutomationRequest.Status


class TestRejectNeedsAReason:
    def test_service_view_and_api_refuse_a_reject_without_a_reason(self, world, submit, client):
        request = submit()
        with pytest.raises(InvalidRequest) as refused:
            services.request_reject(request=request, actor=world.bob, comment="   ")
        assert refused.value.code == "reason_required"
        client.force_login(world.bob)
        response = client.post(f"/requests/{request.pk}/reject/", {"comment": ""}, follow=True)
        assert "Say why you reject it" in response.content.decode()
        api = APIClient()
        api.force_login(world.bob)
        answer = api.post(f"/api/v1/requests/{request.pk}/reject/", {}, format="json")
        assert answer.status_code == 400 and answer.json()["code"] == "reason_required"
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED
        client.post(f"/requests/{request.pk}/reject/", {"comment": "use the maintenance window"})
        request.refresh_from_db()
        assert request.status == Status.REJECTED and request.status_reason == "use the maintenance window"

    def test_the_page_puts_reject_behind_a_confirmation_with_a_required_reason(self, world, submit, client):
        request = submit()
        client.force_login(world.bob)
        page = client.get(f"/requests/{request.pk}/").content.decode()
        dialog = page[page.index('class="confirm reject-dialog"'):]
        dialog = dialog[:dialog.index("</details>")]
        assert "Reject or send back…" in dialog and "required" in dialog
        assert f"Reject request #{request.pk}" in dialog and "Send back for changes" in dialog


class TestSendBackAndAmend:
    def test_send_back_then_amend_refingerprints_and_clears_approvals(self, world, submit, client, monkeypatch,
                                                                     django_capture_on_commit_callbacks):
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        world.platform_policy.approvals_required = 2
        world.platform_policy.save()
        request = services.request_approve(request=submit(), actor=world.frank)  # one of two
        with pytest.raises(InvalidRequest):
            services.request_send_back(request=request, actor=world.bob, comment="")
        with pytest.raises(NotAllowed):
            services.request_send_back(request=request, actor=world.alice, comment="mine")
        with django_capture_on_commit_callbacks(execute=True):
            request = services.request_send_back(request=request, actor=world.bob, comment="web-2 please, not web-1")
        assert request.status == Status.CHANGES_REQUESTED
        client.force_login(world.alice)
        page = client.get(f"/requests/{request.pk}/").content.decode()
        assert "web-2 please, not web-1" in page and "Amend and resubmit" in page
        form_url = client.get(f"/requests/{request.pk}/amend/")["Location"]
        assert f"amend={request.pk}" in form_url
        form = client.get(form_url)
        assert form.status_code == 200 and "Amending" in form.content.decode()
        data = {"version": "default", "mode": "simple", "param_InstanceId": [world.web2], "justification": "x",
                "amend": str(request.pk)}
        post_url = reverse("automations:request_new", args=[world.platform_policy.runbook_id])
        preview = client.post(post_url, {**data, "preview": "1"}).context["preview"]
        response = client.post(post_url, {**data, "submit": "1", "previewed": preview.fingerprint})
        assert response.status_code == 302 and response["Location"] == f"/requests/{request.pk}/"
        old = request.fingerprint
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED and request.fingerprint != old
        assert request.parameters["InstanceId"] == [world.web2] and request.resources == [world.web2]
        assert request.approvals.count() == 0
        event = AuditEvent.objects.get(request=request, action="request.amended")
        assert event.details["cleared_approvals"] == ["frank"] and event.details["old_fingerprint"] == old
        assert AutomationRequest.objects.count() == 1
        assert NotificationDelivery.objects.filter(request=request, event="request.sent_back").exists()
        # Frank may approve again: the old approval no longer counts.
        services.request_approve(request=request, actor=world.frank)

    def test_the_api_sends_back_with_a_reason_and_comments(self, world, submit):
        request = submit()
        api = APIClient()
        api.force_login(world.bob)
        refused = api.post(f"/api/v1/requests/{request.pk}/send-back/", {}, format="json")
        assert refused.status_code == 400 and refused.json()["code"] == "reason_required"
        sent = api.post(f"/api/v1/requests/{request.pk}/send-back/", {"comment": "web-2 too"}, format="json")
        assert sent.status_code == 200 and sent.json()["status"] == "changes_requested"
        said = api.post(f"/api/v1/requests/{request.pk}/comments/", {"comment": "see the ticket"}, format="json")
        assert said.status_code == 200
        assert request.comments.get().body == "see the ticket"

    def test_a_request_left_sent_back_expires_on_the_waiting_clock(self, world, submit):
        import datetime as dt

        from django.utils import timezone

        request = services.request_send_back(request=submit(), actor=world.bob, comment="change it")
        assert services.request_expire_stale(now=timezone.now()) == 0
        assert services.request_expire_stale(now=timezone.now() + dt.timedelta(days=30)) == 1
        request.refresh_from_db()
        assert request.status == Status.EXPIRED and request.status_reason == "not amended in time"

    def test_only_the_requester_amends_and_only_when_sent_back(self, world, submit):
        request = submit()
        with pytest.raises(Exception):
            services.request_amend(request=request, actor=world.alice, parameters={"InstanceId": [world.web2]})
        request = services.request_send_back(request=request, actor=world.bob, comment="change it")
        with pytest.raises(NotAllowed):
            services.request_amend(request=request, actor=world.bob, parameters={"InstanceId": [world.web2]})


class TestThread:
    def test_requester_approver_and_auditor_talk_and_each_comment_is_audited(
            self, world, submit, client, monkeypatch, django_capture_on_commit_callbacks):
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        request = submit()
        for user, text in ((world.alice, "Needed for the 14:00 deploy"), (world.bob, "Why not web-2 too?"),
                           (world.carol, "Please link the ticket")):
            client.force_login(user)
            with django_capture_on_commit_callbacks(execute=True):
                response = client.post(f"/requests/{request.pk}/comment/", {"body": text})
            assert response.status_code == 302
        page = client.get(f"/requests/{request.pk}/").content.decode()
        for text in ("Needed for the 14:00 deploy", "Why not web-2 too?", "Please link the ticket"):
            assert text in page
        events = AuditEvent.objects.filter(request=request, action="request.commented").order_by("sequence")
        assert [e.actor_name for e in events] == ["alice", "bob", "carol"]
        client.force_login(world.dave)  # another team: the request does not exist for him
        assert client.post(f"/requests/{request.pk}/comment/", {"body": "hi"}).status_code == 404
        delivery = NotificationDelivery.objects.filter(request=request, event="request.commented").order_by("pk").last()
        assert world.carol.email not in delivery.recipients and world.alice.email in delivery.recipients


class TestConsequences:
    def test_withdraw_dialog_and_mail_to_the_approvers(self, world, submit, client, monkeypatch, settings,
                                                        django_capture_on_commit_callbacks):
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        settings.DELEGATE_SITE_URL = "http://portal.example:8123"
        request = submit()
        client.force_login(world.alice)
        page = client.get(f"/requests/{request.pk}/").content.decode()
        assert "Withdraw…" in page and "Nothing has run in AWS" in page
        with django_capture_on_commit_callbacks(execute=True):
            client.post(f"/requests/{request.pk}/withdraw/")
        delivery = NotificationDelivery.objects.get(request=request, event="request.withdrawn")
        assert world.bob.email in delivery.recipients and world.alice.email not in delivery.recipients
        assert f"http://portal.example:8123/requests/{request.pk}/" in delivery.body
        assert "web-1 (" in delivery.body  # names, not bare ids

    def test_cancel_dialog_names_the_steps_already_run(self, world, submit, sb, client, monkeypatch):
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        request = services.request_approve(request=submit(), actor=world.bob)
        services.request_dispatch(request_id=request.pk)

        def stepping():
            services.execution_statuses_sync()
            steps = AutomationRequest.objects.get(pk=request.pk).execution.steps
            return any(step["status"] not in ("Pending", "") for step in steps)
        wait_until(stepping, timeout=30, what="a step to start")
        client.force_login(world.alice)
        page = client.get(f"/requests/{request.pk}/").content.decode()
        if AutomationRequest.objects.get(pk=request.pk).status == Status.RUNNING:
            dialog = page[page.index('class="confirm cancel-dialog"'):]
            dialog = dialog[:dialog.index("</details>")]
            assert "steps already run are not undone" in dialog and "<code>stopInstances</code>" in dialog

    def test_after_a_failure_the_page_shows_target_state_and_the_undoing_runbook(self, world, submit, sb, client,
                                                                                 monkeypatch):
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        start = f.RunbookFactory(account=world.account, name="AWS-StartEC2Instance")
        f.RunbookVersionFactory(runbook=start, filename="aws-StartEC2Instance.json")
        start_policy = f.TeamRunbookFactory(team=world.platform, runbook=start)
        instance = world.web2
        sb.faults.fail_step = {"startInstances"}  # stopped, then the start fails: web-2 is left stopped
        request = services.request_approve(request=submit(parameters={"InstanceId": [instance]}), actor=world.bob)
        services.request_dispatch(request_id=request.pk)
        try:
            def failed():
                services.execution_statuses_sync()
                return AutomationRequest.objects.get(pk=request.pk).status == Status.FAILED
            wait_until(failed, timeout=60, what="the run to fail")
            client.force_login(world.alice)
            page = client.get(f"/requests/{request.pk}/").content.decode()
            assert "Where the targets are now" in page
            assert f"web-2 ({instance})</span>: <strong>stopped</strong>" in page
            assert f'href="/runbooks/{start_policy.runbook_id}/request/?team=platform&amp;undo={request.pk}"' in page
            form = client.get(f"/runbooks/{start_policy.runbook_id}/request/?undo={request.pk}")
            assert form.context["form"].initial["param_InstanceId"] == [instance]
        finally:
            sb.faults.fail_step = set()
            boto3.client("ec2", region_name="eu-west-1", endpoint_url=sb.url).start_instances(InstanceIds=[instance])
