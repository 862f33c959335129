"""Notifications: email (Django's mail framework) and signed, Slack-compatible outgoing webhooks.

A notification never blocks or rolls back a request: the event is turned into delivery rows
only after the request's transaction committed (on_commit, robust), each row is published to
the worker with a short, non-retrying publish, and the worker delivers it, retrying transient
failures with exponential backoff. Rows whose message was lost are republished by the sweeper.

Webhook bodies carry no parameter values, only what a channel message needs: request, runbook,
team, requester, status, resources and a link.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import random
import time
import urllib.error
import urllib.request
from functools import partial

import structlog
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from automations.models import AutomationRequest, NotificationDelivery, NotificationWebhook

log = structlog.get_logger(__name__)
Status = AutomationRequest.Status
State = NotificationDelivery.State

SIGNATURE_HEADER = "X-Delegate-Signature"
TIMESTAMP_HEADER = "X-Delegate-Timestamp"
# Status changes that someone hears about; every other transition is silent.
STATUS_EVENTS = {
    Status.APPROVED: "request.approved",
    Status.REJECTED: "request.rejected",
    Status.CHANGES_REQUESTED: "request.sent_back",
    # The approvers who were asked hear that they need not decide any more.
    Status.WITHDRAWN: "request.withdrawn",
    Status.EXPIRED: "request.expired",
    Status.SUCCEEDED: "execution.finished",
    Status.CANCELLED: "execution.finished",
    Status.FAILED: "execution.failed",
    Status.TIMED_OUT: "execution.failed",
    Status.DISPATCH_FAILED: "execution.failed",
}
MAX_BACKOFF_SECONDS = 300  # stays under the Redis visibility timeout: a countdown longer than it is redelivered early


class RetryLater(Exception):
    """A transient delivery failure: the task retries after `countdown` seconds."""

    def __init__(self, countdown: float, reason: str):
        super().__init__(reason)
        self.countdown = countdown


class _Transient(Exception):
    pass


class _Permanent(Exception):
    pass


#
# Raising events (called inside the request's transaction; nothing happens until it commits)
#

def on_transition(request: AutomationRequest, old: str, new: str) -> None:
    event = STATUS_EVENTS.get(new)
    if event:
        notify_on_commit(event, request.pk)


def notify_on_commit(event: str, request_id: int | None, **context) -> None:
    """Enqueue `event` once the current transaction commits; a failure here is logged, never raised."""
    transaction.on_commit(partial(_enqueue, event, request_id, context), robust=True)


def _enqueue(event: str, request_id: int | None, context: dict) -> None:
    try:
        ids = create_deliveries(event, request_id, context)
    except Exception as error:  # the request committed already; losing a notification must not surface
        log.warning("notify.enqueue_failed", notify_event=event, request_id=request_id, error=str(error))
        return
    for delivery_id in ids:
        if not publish(delivery_id):
            break  # the broker is down: the sweeper publishes the rest; don't wait once per row


# After a failed publish, skip publishing for a while: with the broker down, every request
# would otherwise wait for a connection timeout per event. The sweeper delivers the rows later.
BROKER_BACKOFF_SECONDS = 30.0
_broker_down_until = 0.0


def publish(delivery_id: int) -> bool:
    global _broker_down_until
    from automations.services import publishing

    if time.monotonic() < _broker_down_until:
        return False
    try:
        publishing.send(publishing.NOTIFY_TASK, delivery_id)
        return True
    except Exception as error:  # broker unreachable: the row stays pending for the sweeper
        _broker_down_until = time.monotonic() + BROKER_BACKOFF_SECONDS
        log.warning("notify.publish_failed", delivery_id=delivery_id, error=str(error))
        return False


def reset_publish_backoff() -> None:
    global _broker_down_until
    _broker_down_until = 0.0


def create_deliveries(event: str, request_id: int | None, context: dict) -> list[int]:
    """Render the event once and store one delivery per channel; return their ids."""
    request = (AutomationRequest.objects.select_related("team", "requester", "runbook", "runbook_version", "account")
               .filter(pk=request_id).first()) if request_id else None
    if request is None:
        return []
    subject, text, mrkdwn = render(event, request, context)
    rows: list[NotificationDelivery] = []
    emails = recipients(event, request, context)
    if emails:
        rows.append(NotificationDelivery(event=event, request=request, channel=NotificationDelivery.Channel.EMAIL,
                                         recipients=emails, subject=subject, body=text))
    hooks = NotificationWebhook.objects.filter(enabled=True).filter(Q(team__isnull=True) | Q(team=request.team))
    for hook in hooks:
        if hook.wants(event):
            rows.append(NotificationDelivery(event=event, request=request, channel=NotificationDelivery.Channel.WEBHOOK,
                                             webhook=hook, subject=subject,
                                             payload=webhook_payload(event, request, text, mrkdwn, context)))
    with transaction.atomic():
        for row in rows:
            row.save()
    return [row.pk for row in rows]


#
# Who hears about what, and what they read
#

def recipients(event: str, request: AutomationRequest, context: dict) -> list[str]:
    """Email addresses for `event`: approvers for submissions and waiting steps, the next pool on
    escalation, the requester for outcomes. Never the requester as an approver."""
    from django.contrib.auth import get_user_model

    from automations import policy

    users = get_user_model().objects.filter(is_active=True).exclude(email="")
    if event in ("request.submitted", "step.waiting", "request.withdrawn"):
        base = policy.pool(request.team, policy.policy_for(request)).exclude(pk=request.requester_id)
        now = timezone.now()
        delegates = request.team.delegations.filter(delegator__in=base, revoked_at=None, starts_at__lte=now,
                                                    ends_at__gt=now).values("delegate_id")
        users = users.filter(Q(pk__in=base.values("pk")) | Q(pk__in=delegates)).exclude(pk=request.requester_id)
    elif event == "request.escalated":
        users = users.filter(groups=context.get("group_id")).exclude(pk=request.requester_id)
    elif event == "request.commented":
        # The requester, whoever decided or commented so far, and the leads; never the author.
        talking = set(request.comments.values_list("author_id", flat=True))
        talking |= set(request.approvals.values_list("approver_id", flat=True))
        base = policy.pool(request.team, policy.policy_for(request)).values_list("pk", flat=True)
        users = users.filter(pk__in=talking | set(base) | {request.requester_id}).exclude(pk=context.get("author_id"))
    elif event == "request.content_changed":
        # The requester, and whoever approved (or, before any approval, whoever could).
        approvers = request.approvals.values("approver_id")
        if not approvers.exists():
            approvers = policy.pool(request.team, policy.policy_for(request)).values("pk")
        users = users.filter(Q(pk=request.requester_id) | Q(pk__in=approvers))
    else:
        users = users.filter(pk=request.requester_id)
    return sorted(set(users.values_list("email", flat=True)))


def request_url(request: AutomationRequest) -> str:
    return settings.DELEGATE_SITE_URL.rstrip("/") + reverse("automations:request_detail", args=[request.pk])


def queue_url() -> str:
    return settings.DELEGATE_SITE_URL.rstrip("/") + reverse("automations:approval_queue")


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn control characters; user text must not become links or mentions.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(event: str, request: AutomationRequest, context: dict) -> tuple[str, str, str]:
    """(subject, plain text, Slack mrkdwn) for one event."""
    from automations import policy

    name = f"#{request.pk} {request.runbook.short_name} v{request.runbook_version.version}"
    where = f"{request.team.name} · {request.account.account_id}/{request.region}"
    targets = ", ".join(request.resource_labels[:10]) + (" …" if len(request.resources) > 10 else "") or "no resources"
    requester = request.requester.get_username()
    url = request_url(request)
    approvers = ", ".join(request.approvals.values_list("approver__username", flat=True).order_by("created_at"))
    if event == "request.submitted":
        required = policy.approvals_required(request)
        subject = f"{name} by {requester} needs your approval"
        lead = f"{requester} asks to run {name} on {targets} ({where}). It needs {required} approval{'s' if required != 1 else ''}."
        if request.justification:
            lead += f" Justification: {request.justification[:300]}"
        if request.ticket_reference:
            lead += f" Ticket: {request.ticket_reference}"
    elif event == "request.approved":
        subject = f"{name} was approved"
        when = f"It will start at {request.run_at:%Y-%m-%d %H:%M} UTC." if request.run_at else "It will start shortly."
        lead = f"Your request {name} was approved{' by ' + approvers if approvers else ' by policy (no approval required)'}. {when}"
    elif event == "request.rejected":
        subject = f"{name} was rejected"
        lead = f"Your request {name} was rejected. {request.status_reason[:300]}".strip()
    elif event == "request.sent_back":
        subject = f"{name} was sent back for changes"
        lead = (f"Your request {name} was sent back for changes: {request.status_reason[:500]} "
                "Amend it on the request page, or withdraw it.")
    elif event == "request.withdrawn":
        subject = f"{name} was withdrawn"
        lead = f"{requester} withdrew {name} ({where}) on {targets}; it no longer needs your approval."
    elif event == "request.commented":
        last = request.comments.select_related("author").order_by("-created_at", "-id").first()
        who = last.author.get_username() if last else "Someone"
        subject = f"{name}: new comment from {who}"
        lead = f"{who} commented on {name}: {(last.body if last else '')[:500]}"
    elif event == "request.expired":
        subject = f"{name} expired"
        lead = f"Your request {name} expired: {request.status_reason or 'not decided in time'}."
    elif event == "execution.finished":
        subject = f"{name} {request.get_status_display().lower()}"
        lead = f"The run of {name} on {targets} finished: {request.get_status_display()}."
    elif event == "execution.failed":
        subject = f"{name} failed"
        lead = f"The run of {name} on {targets} did not succeed ({request.get_status_display()}). {request.status_reason[:300]}".strip()
    elif event == "request.escalated":
        subject = f"Escalated: {name} is still waiting for approval"
        lead = (f"{requester}'s request {name} ({where}) has waited for approval since "
                f"{request.created_at:%Y-%m-%d %H:%M} UTC and was escalated to {context.get('group', 'your group')}. "
                "You may approve or reject it.")
    elif event == "request.content_changed":
        subject = f"{name} was not started: the runbook's content changed"
        lead = (f"{name} ({where}) was not {'approved' if context.get('where') == 'approval' else 'started'}: "
                "SSM now serves different content under that document version than the one requested and approved. "
                "Nothing ran. Submit it again to review and run the new content.")
    elif event == "step.waiting":
        pause = context.get("step_action") == "aws:pause"
        subject = f"{name}: step {context.get('step', '')} waits {'to be resumed' if pause else 'for approval'}"
        lead = (f"The run of {name} ({where}) is waiting at its {context.get('step_action') or 'aws:approve'} step "
                f"{context.get('step', '')}. {'Resume' if pause else 'Answer'} it in Delegate's approval queue.")
        url = queue_url()
    else:
        subject, lead = f"{name}: {event}", f"{name}: {event}"
    text = f"{lead}\n\n{url}\n"
    mrkdwn = f"{_slack_escape(lead)}\n<{url}|Open {_slack_escape(name)} in Delegate>"
    return f"[Delegate] {subject}"[:255], text, mrkdwn


def webhook_payload(event: str, request: AutomationRequest, text: str, mrkdwn: str, context: dict) -> dict:
    """A body Slack's incoming webhooks accept as-is (text + blocks), with structured metadata."""
    return {
        "text": text.strip(),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn[:2900]}}],
        "metadata": {
            "event_type": "delegate_" + event.replace(".", "_"),
            "event_payload": {
                "event": event, "request_id": request.pk, "status": request.status, "team": request.team.name,
                "runbook": request.runbook.name, "version": request.runbook_version.version,
                "requester": request.requester.get_username(), "account_id": request.account.account_id,
                "region": request.region, "resources": list(request.resources), "url": request_url(request),
                **{key: value for key, value in context.items() if key in ("step", "group")},
            },
        },
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """v1=HMAC-SHA256(secret, "v1:" + timestamp + ":" + body), hex. Receivers recompute and compare."""
    digest = hmac.new(secret.encode(), b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


#
# Delivery (the worker)
#

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is answered as the 3xx it is: a signed body never goes somewhere else


_opener = urllib.request.build_opener(_NoRedirect)


def _post_webhook(delivery: NotificationDelivery) -> None:
    hook = delivery.webhook
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json", "User-Agent": "Delegate-Webhooks/1",
        "X-Delegate-Event": delivery.event, "X-Delegate-Delivery": str(delivery.pk),
        TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(hook.secret, timestamp, body),
    }
    http_request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(http_request, timeout=settings.DELEGATE_NOTIFY_TIMEOUT_SECONDS) as response:
            response.read(1024)
    except urllib.error.HTTPError as error:
        if error.code == 429 or error.code >= 500:
            raise _Transient(f"HTTP {error.code}") from None
        raise _Permanent(f"HTTP {error.code}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        raise _Transient(type(getattr(error, "reason", error)).__name__) from None


def _send_email(delivery: NotificationDelivery) -> None:
    message = EmailMessage(subject=delivery.subject, body=delivery.body, from_email=settings.DEFAULT_FROM_EMAIL,
                           to=list(delivery.recipients))
    try:
        message.send(fail_silently=False)
    except (ConnectionError, TimeoutError, OSError) as error:  # smtplib errors are OSErrors
        raise _Transient(type(error).__name__) from None


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter: base, 2×base, 4×base … capped, each ±20 %."""
    base = settings.DELEGATE_NOTIFY_BACKOFF_SECONDS * 2 ** max(0, attempt - 1)
    return min(MAX_BACKOFF_SECONDS, base) * random.uniform(0.8, 1.2)


def notification_deliver(*, delivery_id: int) -> str:
    """Deliver one row once; returns the outcome. Raises RetryLater for a transient failure.

    The claim (pending → sending, compare-and-set) makes a duplicate message a no-op.
    """
    now = timezone.now()
    claimed = NotificationDelivery.objects.filter(
        pk=delivery_id, state=State.PENDING, next_attempt_at__lte=now + dt.timedelta(seconds=1),
    ).update(state=State.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    if not claimed:
        return "skipped"
    delivery = NotificationDelivery.objects.select_related("webhook").get(pk=delivery_id)
    try:
        if delivery.channel == NotificationDelivery.Channel.WEBHOOK:
            if delivery.webhook is None or not delivery.webhook.enabled:
                raise _Permanent("webhook disabled or removed")
            _post_webhook(delivery)
        else:
            _send_email(delivery)
    except _Transient as error:
        if delivery.attempts >= settings.DELEGATE_NOTIFY_MAX_ATTEMPTS:
            NotificationDelivery.objects.filter(pk=delivery_id).update(state=State.FAILED, last_error=str(error)[:500])
            log.warning("notify.gave_up", delivery_id=delivery_id, notify_event=delivery.event, error=str(error))
            return "failed"
        countdown = backoff_seconds(delivery.attempts)
        NotificationDelivery.objects.filter(pk=delivery_id).update(
            state=State.PENDING, next_attempt_at=timezone.now() + dt.timedelta(seconds=countdown),
            last_error=str(error)[:500])
        raise RetryLater(countdown, str(error)) from None
    except (_Permanent, Exception) as error:  # anything unexpected is not worth retrying forever
        NotificationDelivery.objects.filter(pk=delivery_id).update(state=State.FAILED, last_error=str(error)[:500])
        log.warning("notify.failed", delivery_id=delivery_id, notify_event=delivery.event, error=str(error))
        return "failed"
    NotificationDelivery.objects.filter(pk=delivery_id).update(state=State.DELIVERED, delivered_at=timezone.now(),
                                                               last_error="")
    return "delivered"


def notifications_sweep(*, publish=publish, limit: int = 200) -> int:
    """Republish deliveries whose message was lost: pending and overdue, or claimed by a worker that died."""
    now = timezone.now()
    grace = dt.timedelta(seconds=settings.DELEGATE_OUTBOX_GRACE_SECONDS)
    # A worker that died mid-send leaves the row claimed; the send timeout is far below this lease.
    NotificationDelivery.objects.filter(state=State.SENDING, claimed_at__lt=now - grace).update(state=State.PENDING)
    due = list(NotificationDelivery.objects.filter(state=State.PENDING, next_attempt_at__lte=now - grace)
               .order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    reset_publish_backoff()  # the sweeper always tries: it is how a recovered broker is noticed
    published = 0
    for delivery_id in due:
        if not publish(delivery_id):
            break
        published += 1
    return published
