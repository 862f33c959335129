"""Notifications: who hears about what, the Slack-compatible signed webhook body, delivery with
retries and backoff (in a real Celery worker too), and the promise that a notification never
blocks or rolls back a request.

Webhooks are delivered to a real HTTP server on loopback that verifies the signature.
"""
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from automations import services, tasks  # noqa: F401 - registers the tasks send_task publishes to
from automations.models import AuditEvent, AutomationRequest, NotificationDelivery, NotificationWebhook
from automations.services import dispatch, notifications, publishing
from tests.integration.conftest import broker, redis_server, wait_until, worker_factory  # noqa: F401

Status = AutomationRequest.Status
SECRET = "a-shared-secret-of-enough-length"


class Receiver:
    """A webhook endpoint: answers with the scripted statuses, records what it got, checks signatures."""

    def __init__(self, statuses=(200,), secret=SECRET):
        self.statuses = list(statuses)
        self.secret = secret
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                timestamp = self.headers.get("X-Delegate-Timestamp", "")
                expected = "v1=" + hmac.new(receiver.secret.encode(), b"v1:" + timestamp.encode() + b":" + body,
                                            hashlib.sha256).hexdigest()
                receiver.received.append({
                    "at": time.monotonic(), "path": self.path, "headers": dict(self.headers), "body": body,
                    "valid": hmac.compare_digest(expected, self.headers.get("X-Delegate-Signature", "")),
                })
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=(200,)):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def no_publish(monkeypatch):
    published = []
    monkeypatch.setattr(notifications, "publish", lambda delivery_id: published.append(delivery_id) or True)
    return published


def hook(url, **fields):
    return NotificationWebhook.objects.create(name=fields.pop("name", "ops"), url=url, secret=SECRET, **fields)


def deliveries(event):
    return list(NotificationDelivery.objects.filter(event=event).order_by("id"))


class TestWhoHears:
    def test_submitted_goes_to_the_approvers_never_the_requester(self, world, submit, no_publish,
                                                                  django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            request = submit(actor=world.bob)
        [email] = deliveries("request.submitted")
        assert email.channel == "email" and email.recipients == ["frank@example.com"]
        assert f"#{request.pk}" in email.subject and "needs your approval" in email.subject
        assert no_publish == [email.pk]

    def test_outcomes_go_to_the_requester(self, world, submit, no_publish, django_capture_on_commit_callbacks):
        request = submit()
        with django_capture_on_commit_callbacks(execute=True):
            services.request_approve(request=request, actor=world.bob)
        [approved] = deliveries("request.approved")
        assert approved.recipients == ["alice@example.com"] and "approved by bob" in approved.body
        with django_capture_on_commit_callbacks(execute=True):
            services.request_reject(request=submit(), actor=world.frank, comment="not during the sale")
        [rejected] = deliveries("request.rejected")
        assert rejected.recipients == ["alice@example.com"] and "not during the sale" in rejected.body

    def test_execution_finished_and_failed(self, world, submit, sb, no_publish, django_capture_on_commit_callbacks):
        sb.faults.fail_step = {"stopInstances"}
        request = services.request_approve(request=submit(), actor=world.bob)
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        sb.wait_for_execution(request.execution.execution_id, timeout=30)
        with django_capture_on_commit_callbacks(execute=True):
            services.execution_statuses_sync()
        [failed] = deliveries("execution.failed")
        assert failed.recipients == ["alice@example.com"] and "did not succeed" in failed.body

    def test_webhooks_filtered_by_team_events_and_enabled(self, world, submit, no_publish,
                                                           django_capture_on_commit_callbacks):
        everything = hook("https://hooks.example.com/a", name="all")
        hook("https://hooks.example.com/b", name="data only", team=world.data)
        hook("https://hooks.example.com/c", name="failures only", events=["execution.failed"])
        hook("https://hooks.example.com/d", name="off", enabled=False)
        with django_capture_on_commit_callbacks(execute=True):
            submit()
        webhooks = [d for d in deliveries("request.submitted") if d.channel == "webhook"]
        assert [d.webhook_id for d in webhooks] == [everything.pk]


class TestWebhookBody:
    def test_slack_compatible_body_escaped_without_parameter_values(self, world, submit, no_publish,
                                                                     django_capture_on_commit_callbacks):
        hook("https://hooks.example.com/a")
        with django_capture_on_commit_callbacks(execute=True):
            request = submit(justification="<script>alert(1)</script> & <!channel>")
        payload = NotificationDelivery.objects.get(channel="webhook").payload
        assert set(payload) == {"text", "blocks", "metadata"}
        assert payload["blocks"][0]["type"] == "section" and payload["blocks"][0]["text"]["type"] == "mrkdwn"
        mrkdwn = payload["blocks"][0]["text"]["text"]
        assert "<script>" not in mrkdwn and "&lt;script&gt;" in mrkdwn and "<!channel>" not in mrkdwn
        assert f"/requests/{request.pk}/|Open" in mrkdwn
        meta = payload["metadata"]
        assert meta["event_type"] == "delegate_request_submitted"
        assert meta["event_payload"]["request_id"] == request.pk and meta["event_payload"]["team"] == "platform"
        assert world.account.automation_role_arn not in json.dumps(payload)  # parameters are not sent
        assert SECRET not in json.dumps(payload)

    def test_signature_is_hmac_sha256_over_timestamp_and_body(self):
        signature = notifications.sign("s3cret", "1700000000", b'{"text":"hi"}')
        expected = hmac.new(b"s3cret", b'v1:1700000000:{"text":"hi"}', hashlib.sha256).hexdigest()
        assert signature == f"v1={expected}"


def _delivery_for(world, submit, url, django_capture_on_commit_callbacks):
    webhook = hook(url)
    with django_capture_on_commit_callbacks(execute=True):
        submit()
    return NotificationDelivery.objects.get(channel="webhook", webhook=webhook)


class TestDelivery:
    def test_delivers_signed_body_once(self, world, submit, receiver, no_publish, django_capture_on_commit_callbacks):
        endpoint = receiver([200])
        delivery = _delivery_for(world, submit, endpoint.url, django_capture_on_commit_callbacks)
        assert notifications.notification_deliver(delivery_id=delivery.pk) == "delivered"
        assert notifications.notification_deliver(delivery_id=delivery.pk) == "skipped"  # a duplicate message
        [got] = endpoint.received
        assert got["valid"] and got["headers"]["Content-Type"] == "application/json"
        assert got["headers"]["X-Delegate-Event"] == "request.submitted"
        assert json.loads(got["body"]) == delivery.payload
        delivery.refresh_from_db()
        assert delivery.state == "delivered" and delivery.attempts == 1

    def test_transient_failure_backs_off_then_gives_up(self, world, submit, receiver, no_publish, settings,
                                                       django_capture_on_commit_callbacks):
        settings.DELEGATE_NOTIFY_MAX_ATTEMPTS = 3
        settings.DELEGATE_NOTIFY_BACKOFF_SECONDS = 10
        endpoint = receiver([503])
        delivery = _delivery_for(world, submit, endpoint.url, django_capture_on_commit_callbacks)
        countdowns = []
        for _ in range(3):
            NotificationDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
            try:
                outcome = notifications.notification_deliver(delivery_id=delivery.pk)
            except notifications.RetryLater as later:
                countdowns.append(later.countdown)
                delivery.refresh_from_db()
                assert delivery.state == "pending" and delivery.last_error == "HTTP 503"
                assert delivery.next_attempt_at > timezone.now() + dt.timedelta(seconds=7)
        assert outcome == "failed" and len(endpoint.received) == 3
        assert 8 <= countdowns[0] <= 12 and 16 <= countdowns[1] <= 24  # exponential, ±20 % jitter
        delivery.refresh_from_db()
        assert delivery.state == "failed" and delivery.attempts == 3

    @pytest.mark.parametrize("status", [400, 404, 302])
    def test_client_errors_and_redirects_are_not_retried(self, world, submit, receiver, no_publish, status,
                                                         django_capture_on_commit_callbacks):
        endpoint = receiver([status])
        delivery = _delivery_for(world, submit, endpoint.url, django_capture_on_commit_callbacks)
        assert notifications.notification_deliver(delivery_id=delivery.pk) == "failed"
        assert [r["path"] for r in endpoint.received] == ["/hook"]  # a redirect is never followed

    def test_unreachable_endpoint_is_transient(self, world, submit, no_publish, django_capture_on_commit_callbacks):
        delivery = _delivery_for(world, submit, "http://127.0.0.1:9/hook", django_capture_on_commit_callbacks)
        with pytest.raises(notifications.RetryLater):
            notifications.notification_deliver(delivery_id=delivery.pk)

    def test_email_through_djangos_mail_framework(self, world, submit, no_publish, settings,
                                                  django_capture_on_commit_callbacks):
        settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
        with django_capture_on_commit_callbacks(execute=True):
            request = submit()
        [email] = deliveries("request.submitted")
        assert notifications.notification_deliver(delivery_id=email.pk) == "delivered"
        [message] = mail.outbox
        assert sorted(message.to) == ["bob@example.com", "frank@example.com"]
        assert f"/requests/{request.pk}/" in message.body

    def test_sweeper_republishes_lost_and_abandoned_deliveries(self, world, submit, no_publish,
                                                               django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            submit()
        [email] = deliveries("request.submitted")
        long_ago = timezone.now() - dt.timedelta(hours=1)
        republished = []
        assert notifications.notifications_sweep(publish=republished.append) == 0  # within the grace period
        NotificationDelivery.objects.filter(pk=email.pk).update(next_attempt_at=long_ago)
        notifications.notifications_sweep(publish=lambda pk: republished.append(pk) or True)
        NotificationDelivery.objects.filter(pk=email.pk).update(state="sending", claimed_at=long_ago)
        notifications.notifications_sweep(publish=lambda pk: republished.append(pk) or True)
        assert republished == [email.pk, email.pk]


@pytest.mark.django_db(transaction=True)
class TestNeverBlocksOrRollsBack:
    def test_a_broken_notifier_does_not_undo_the_approval(self, world, submit, monkeypatch):
        monkeypatch.setattr(dispatch, "dispatch_publish_after_approval", lambda pk: None)

        def broken(*args, **kwargs):
            raise RuntimeError("mail server on fire")
        monkeypatch.setattr(notifications, "create_deliveries", broken)
        request = services.request_approve(request=submit(), actor=world.bob)
        request.refresh_from_db()
        assert request.status == Status.APPROVED
        assert AuditEvent.objects.filter(request=request, action="request.approved").exists()

    def test_broker_down_costs_one_bounded_publish_and_the_row_waits(self, world, submit, monkeypatch, settings):
        from portal.celery import app

        monkeypatch.setattr(dispatch, "dispatch_publish_after_approval", lambda pk: None)
        # An earlier test may have left the process believing the broker is down: then nothing here
        # would try the broker at all (the count below caught exactly that in the full suite).
        notifications.reset_publish_backoff()
        hook("https://hooks.example.com/a")
        hook("https://hooks.example.com/b", name="second")
        original, outcomes, durations = notifications.publish, [], []

        def timed(pk):
            started = time.monotonic()
            outcomes.append(original(pk))
            durations.append(time.monotonic() - started)
            return outcomes[-1]
        monkeypatch.setattr(notifications, "publish", timed)
        tries = []  # publishes that went to the broker (counted: "did not even try" is not a timing)
        real_send = publishing.send  # services publish by task name (issue 17), not through the task object

        def counted_send(task_name, *args):
            tries.append((task_name, *args))
            return real_send(task_name, *args)
        monkeypatch.setattr(publishing, "send", counted_send)

        def reset_pools():  # as tests/integration's broker fixture does: forget cached connections
            if app._pool is not None:
                with contextlib.suppress(Exception):
                    app._pool.force_close_all()
            app._pool = None
            with contextlib.suppress(AttributeError, KeyError):
                app.__dict__["amqp"]._producer_pool = None

        previous = app.conf.broker_url
        app.conf.broker_url = "redis://127.0.0.1:9/0"  # nothing listens there
        reset_pools()
        try:
            started = time.monotonic()
            request = submit()
            first = time.monotonic() - started
            started = time.monotonic()
            request = services.request_approve(request=request, actor=world.bob)
            elapsed = time.monotonic() - started
        finally:
            app.conf.broker_url = previous
            reset_pools()
            notifications.reset_publish_backoff()
        # The submit's publish failed (bounded by the broker timeout); the approval's did not even try.
        assert request.status == Status.APPROVED
        assert outcomes == [False, False]
        assert len(tries) == 1, tries  # the approval's publish did not even try the broker
        # Generous bounds for the one that tried (the broker's connect timeout), on a busy machine.
        assert durations[0] < 3 and elapsed < 1.5 and first < 10, (durations, first, elapsed)
        rows = NotificationDelivery.objects.filter(request=request, event="request.approved")
        assert rows.count() == 3 and set(rows.values_list("state", flat=True)) == {"pending"}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_worker_retries_with_backoff_until_delivered(world, submit, receiver, worker_factory, broker,  # noqa: F811
                                                     monkeypatch):
    """A real worker on Redis: 503, 503, then 200; the gaps grow; the body is signed every time."""
    monkeypatch.setattr(dispatch, "dispatch_publish_after_approval", lambda pk: None)
    endpoint = receiver([503, 503, 200])
    webhook = hook(endpoint.url, events=["request.submitted"])
    worker_factory.start("notify", DELEGATE_NOTIFY_BACKOFF_SECONDS="0.5")
    request = submit()  # commits: the on_commit hook creates the rows and publishes to the worker
    delivery = wait_until(lambda: NotificationDelivery.objects.filter(webhook=webhook, request=request).first(),
                          timeout=10, what="the delivery row")
    wait_until(lambda: NotificationDelivery.objects.get(pk=delivery.pk).state == "delivered", timeout=30,
               what="the webhook to be delivered")
    times = [got["at"] for got in endpoint.received]
    assert len(times) == 3 and all(got["valid"] for got in endpoint.received)
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    print(f"webhook attempts 3, gaps between attempts: {[round(g, 2) for g in gaps]} s")
    assert gaps[0] >= 0.35 and gaps[1] >= 0.75 and gaps[1] > gaps[0], gaps
    delivery.refresh_from_db()
    assert delivery.attempts == 3 and delivery.last_error == ""
    connection.close()
