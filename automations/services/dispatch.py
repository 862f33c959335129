"""Dispatch: start an approved request's execution in AWS exactly once, paced to AWS's quotas.

The approval committed an outbox row; the Celery message only wakes a worker and carries
nothing but the request id, so a forged or replayed message is harmless. The worker:

1. takes a per-request lock (PostgreSQL advisory lock, held for the whole attempt): a
   duplicate delivery while another worker is mid-call is a no-op;
2. claims the request (compare-and-set approved → dispatching) under Delegate's running cap,
   re-checking everything against the database (status, fingerprint, approvals, role, scope);
3. calls AWS outside any transaction with the request's fixed ClientToken (each attempt
   paced by the shared schedule, automations.aws.pacing);
4. records the execution id (dispatching → running).

A failure is put back with a jittered delay held in the outbox row (never a long Celery
countdown): `dispatching → approved` when AWS surely did not act (throttled, over quota, STS
refused), or kept `dispatching` and retried with the same ClientToken when it may have (a
timeout, a 5xx, a worker that died mid-call). The sweeper republishes rows that are due,
including `calling` rows whose worker died (their lease ran out).
"""
from __future__ import annotations

import datetime as dt
import random
import zlib
from functools import partial

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from automations import audit, aws, locks, policy, selectors
from automations.aws import inventory, pacing
from automations.ops import metrics
from automations.ops.phases import Phases
from automations.models import AutomationRequest, DispatchOutbox, Execution, TeamRunbook
from automations.runbooks import AUTOMATION_ROLE_PARAMETER, fingerprint_for  # noqa: F401
from automations.runbooks import identity as run_identity
from automations.runbooks.start_body import start_body_for
from automations.services import content, dispatch_checks, execution_preview, locations, policies, publishing
from automations.services.transitions import transition

log = structlog.get_logger(__name__)
Status = AutomationRequest.Status
State = DispatchOutbox.State

# A holder that just died (SIGKILLed child, redelivered at once) may need a moment for
# PostgreSQL to notice its closed socket: look again briefly before calling it busy.
_LOCK_PATIENCE_SECONDS = 2.0
# Statuses a request can only have if nobody ever approved it: a message for it is forged.
_NEVER_APPROVED = (Status.SUBMITTED, Status.REJECTED, Status.WITHDRAWN)


def _lock_region_cap(request: AutomationRequest) -> None:
    """Serialise 'count running, then claim' per account and region (inside the transaction)."""
    region_key = zlib.crc32(f"{request.account_id}:{request.region}".encode())
    region_key = region_key - (1 << 32) if region_key >= (1 << 31) else region_key
    locks.hold_for_transaction(locks.REGION_CAP_CLASS, region_key)


def _running_count(request: AutomationRequest) -> int:
    return AutomationRequest.objects.filter(
        account_id=request.account_id, region=request.region, status__in=(Status.DISPATCHING, Status.RUNNING)
    ).count()


def _target_locked(request: AutomationRequest, outbox: DispatchOutbox, now: dt.datetime) -> bool:
    """The team's policy says one run per target (checked by the caller): wait while another run
    holds one of our targets.

    Audited once per holder (not per retry); the outbox row comes back after a short delay.
    """
    if not request.resources:
        return False
    holders = selectors.requests_overlapping(account_id=request.account_id, region=request.region,
                                             resources=request.resources, statuses=selectors.RUNNING_STATUSES,
                                             exclude_pk=request.pk)
    if not holders:
        return False
    reason = f"waiting for target lock held by #{holders[0].pk}"
    if outbox.last_error != reason:
        shared = sorted(set(request.resources).intersection(holders[0].resources))
        audit.record(action="dispatch.waiting_for_target", actor=None, request=request,
                     details={"held_by": [holder.pk for holder in holders], "targets": shared})
    DispatchOutbox.objects.filter(pk=request.pk).update(
        state=State.PENDING, next_attempt_at=now + dt.timedelta(seconds=settings.DELEGATE_TARGET_LOCK_RETRY_SECONDS),
        last_error=reason)
    log.info("dispatch.target_locked", automation_request=request.pk, held_by=holders[0].pk)
    return True


def _backoff(attempts: int) -> dt.timedelta:
    """Capped exponential backoff with equal jitter, so put-back requests do not return in step."""
    ceiling = min(settings.DELEGATE_DISPATCH_RETRY_MAX_SECONDS,
                  settings.DELEGATE_DISPATCH_RETRY_SECONDS * 2 ** min(max(attempts - 1, 0), 12))
    return dt.timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))


def _lease() -> dt.timedelta:
    # Longer than one attempt may take (task_time_limit): a live worker is never re-driven.
    return dt.timedelta(seconds=settings.DELEGATE_DISPATCH_LEASE_SECONDS)


def _refusal(request: AutomationRequest) -> str | None:
    """Why this request must not be started, judged from the database alone (never the message)."""
    if fingerprint_for(request) != request.fingerprint:
        return "The request changed after approval (fingerprint mismatch)."
    approvals = list(request.approvals.all())
    if not approvals and request.approved_at is None:
        return "The request has no approval."
    if any(approval.fingerprint != request.fingerprint for approval in approvals):
        return "An approval was given for different content (fingerprint mismatch)."
    if any(approval.approver_id == request.requester_id for approval in approvals):
        return "The requester approved their own request."
    identity = run_identity.identity_refusal(request)  # the role it runs as is still the one it names
    if identity:
        return identity
    return policy.dispatch_refusal(request)  # the team policy still allows it: scope, approval validity


def _put_back(request_id: int, *, attempts: int, reason: str, details: dict) -> str:
    """dispatching → approved with a jittered next attempt in the outbox: AWS surely did not act."""
    next_attempt = timezone.now() + _backoff(attempts)
    with transaction.atomic():
        request = AutomationRequest.objects.select_for_update().get(pk=request_id)
        if request.status != Status.DISPATCHING:
            return "skipped"
        transition(request, to=Status.APPROVED, actor=None, action="dispatch.deferred",
                   details={"reason": reason, "retry_at": next_attempt, "attempt": attempts, **details})
        DispatchOutbox.objects.filter(pk=request_id).update(state=State.PENDING, next_attempt_at=next_attempt,
                                                            last_error=reason[:1000])
    log.info("dispatch.deferred", automation_request=request_id, reason=reason, retry_at=next_attempt.isoformat())
    return "deferred"


def _hold(request_id: int, *, attempts: int, reason: str, details: dict) -> str:
    """Stay dispatching and retry later with the same ClientToken: AWS may have started it.

    Going back to approved would let the request be cancelled or expire while an execution
    we never recorded runs in AWS; the same token converges on that execution instead.
    """
    next_attempt = timezone.now() + _backoff(attempts)
    with transaction.atomic():
        request = AutomationRequest.objects.select_for_update().get(pk=request_id)
        if request.status != Status.DISPATCHING:
            return "skipped"
        audit.record(action="dispatch.uncertain", actor=None, request=request,
                     details={"reason": reason, "retry_at": next_attempt, "attempt": attempts,
                              "client_token": str(request.client_token), **details})
        DispatchOutbox.objects.filter(pk=request_id).update(state=State.CALLING, next_attempt_at=next_attempt,
                                                            last_error=reason[:1000])
    log.warning("dispatch.uncertain", automation_request=request_id, reason=reason,
                retry_at=next_attempt.isoformat())
    return "uncertain"


def _fail(request_id: int, *, action: str, reason: str, details: dict | None = None, call=None,
          reason_code: str = "") -> str:
    with transaction.atomic():
        request = AutomationRequest.objects.select_for_update().get(pk=request_id)
        if request.status != Status.DISPATCHING:
            return "skipped"
        transition(request, to=Status.DISPATCH_FAILED, actor=None, action=action,
                   details={"reason": reason, **(details or {})}, aws=call,
                   status_reason=reason[:2000], finished_at=timezone.now(), reason_code=reason_code)
        DispatchOutbox.objects.filter(pk=request_id).update(state=State.FAILED, last_error=reason[:1000])
    log.warning(action, automation_request=request_id, reason=reason)
    return "refused" if action == "dispatch.refused" else "failed"


def request_dispatch(*, request_id: int) -> str:
    """Start the SSM execution at most once per request, however often the task is delivered.

    Returns what happened (started, deferred, uncertain, capped, failed, refused, skipped);
    the task and the metrics use it, nothing depends on it for correctness.
    """
    phases = Phases()
    # One attempt per request at a time (held for the whole attempt, AWS call included).
    with locks.held_for_session(locks.DISPATCH_REQUEST_BASE + int(request_id),
                                patience_seconds=_LOCK_PATIENCE_SECONDS) as held:
        phases.mark("lock")
        if not held:
            # Another worker is in the middle of this very request; if it dies, its own message
            # is redelivered (acks_late) or the sweeper re-drives the row when its lease ends.
            log.info("dispatch.busy", automation_request=request_id)
            outcome = "skipped"
        else:
            outcome = _dispatch(request_id, phases)
    metrics.DISPATCH_OUTCOMES.labels(outcome=outcome).inc()
    return outcome


def _claim(request_id: int, *, calendar: dict | None = None, lock_targets: bool = False):
    """In one transaction: decide whether to call AWS now. Returns (request, outbox attempts,
    maybe_started) or an outcome string. `lock_targets`: the team's policy says one run per target
    (read before the transaction with the calendars: a policy flag, not state we claim)."""
    now = timezone.now()
    with transaction.atomic():
        request = (AutomationRequest.objects.select_for_update(of=("self",))
                   .select_related("account", "team", "requester", "runbook", "runbook_version")
                   .filter(pk=request_id).first())
        if request is None:
            log.warning("dispatch.unknown_request", automation_request=request_id)
            return "skipped"
        outbox = DispatchOutbox.objects.select_for_update().filter(pk=request_id).first()
        if request.status == Status.APPROVED:
            if outbox is None or outbox.state not in (State.PENDING, State.ENQUEUED):
                return "skipped"
            if outbox.state == State.PENDING and outbox.next_attempt_at > now + dt.timedelta(seconds=1):
                return "skipped"  # put back for later; the sweeper republishes it when due
            run_at = getattr(request, "run_at", None)
            if run_at and run_at > now:
                DispatchOutbox.objects.filter(pk=request_id).update(state=State.PENDING, next_attempt_at=run_at)
                return "skipped"
            if policies.dispatch_held(request, outbox, calendar=calendar):
                return "held"  # a freeze or CLOSED calendar without emergency override (audited once per hold)
            _lock_region_cap(request)  # also serialises the per-target check below on PostgreSQL
            if lock_targets and _target_locked(request, outbox, now):
                return "locked"
            if _running_count(request) >= settings.DELEGATE_MAX_RUNNING_PER_REGION:
                # Our own cap under AWS's concurrency quota: wait without calling AWS or auditing noise.
                DispatchOutbox.objects.filter(pk=request_id).update(
                    state=State.PENDING, next_attempt_at=now + _backoff(1),
                    last_error="Delegate's running-execution cap reached; waiting for a slot")
                log.info("dispatch.capped", automation_request=request_id,
                         cap=settings.DELEGATE_MAX_RUNNING_PER_REGION)
                return "capped"
            request = transition(request, to=Status.DISPATCHING, actor=None, action="dispatch.claimed",
                                 details={"attempt": outbox.attempts + 1}, row_locked=True, dispatched_at=now)
            maybe_started = False
        elif request.status == Status.DISPATCHING:
            # Redelivered after a worker died, or re-driven by the sweeper after an uncertain
            # attempt: that attempt may have reached AWS. The same ClientToken makes this safe.
            if outbox is None:
                return "skipped"
            audit.record(action="dispatch.resumed", actor=None, request=request,
                         details={"attempt": outbox.attempts + 1, "client_token": str(request.client_token),
                                  "previous_error": outbox.last_error[:500]})
            maybe_started = True
        else:
            if request.status in _NEVER_APPROVED or (request.status == Status.EXPIRED and not request.approved_at):
                # Only a forged or replayed message names a request nobody approved.
                audit.record(action="dispatch.refused", actor=None, request=request,
                             details={"reason": "not approved", "status": request.status})
                log.warning("dispatch.refused", automation_request=request_id, status=request.status)
                return "refused"
            log.info("dispatch.duplicate", automation_request=request_id, status=request.status)
            return "skipped"
        attempts = outbox.attempts + 1
        DispatchOutbox.objects.filter(pk=request_id).update(state=State.CALLING, attempts=attempts,
                                                            next_attempt_at=now + _lease(), last_error="")
        return request, attempts, maybe_started


def _before_claim(request_id: int) -> tuple[dict | None, bool]:
    """Before the claim's transaction, in one light read: (what the change calendars gating this
    request say, if any does: _calendar_answer) and whether its policy locks targets (one run per
    target). Most requests have neither, and then this is all that is read."""
    row = (AutomationRequest.objects.filter(pk=request_id)
           .annotate(lock_targets=Exists(TeamRunbook.objects.filter(
               team_id=OuterRef("team_id"), runbook_id=OuterRef("runbook_id"), one_run_per_target=True)))
           .values("status", "lock_targets", "team__change_calendars", "runbook__change_calendars").first())
    if row is None:
        return None, False
    gated = row["status"] == Status.APPROVED and any(
        str(name).strip() for name in [*(row["team__change_calendars"] or []), *(row["runbook__change_calendars"] or [])])
    return (_calendar_answer(request_id) if gated else None), bool(row["lock_targets"])


def _calendar_answer(request_id: int) -> dict | None:
    """Before the claim's transaction (AWS is never called inside one): what the change calendars
    gating an approved, due request say now. None when none gates it, it is not due, or two
    emergency overrides already let it past change controls."""
    request = (AutomationRequest.objects.select_related("account", "team", "runbook")
               .filter(pk=request_id, status=Status.APPROVED).first())
    now = timezone.now()
    if (request is None or not policy.request_calendars(request) or (request.run_at and request.run_at > now)
            or policy.emergency_override_count(request) >= policy.FREEZE_OVERRIDE_APPROVERS):
        return None
    # A message for a row that is not due (a duplicate, or held for later) asks AWS nothing.
    if not DispatchOutbox.objects.filter(Q(state=State.ENQUEUED) | Q(next_attempt_at__lte=now + dt.timedelta(seconds=1)),
                                         pk=request_id, state__in=(State.PENDING, State.ENQUEUED)).exists():
        return None
    return policies.change_calendar_state(request, at=now)


def _dispatch(request_id: int, phases: Phases) -> str:
    entered = timezone.now()
    calendar, lock_targets = _before_claim(request_id)
    phases.mark("calendar")
    claimed = _claim(request_id, calendar=calendar, lock_targets=lock_targets)
    phases.mark("claim")
    if isinstance(claimed, str):
        return claimed
    request, attempts, maybe_started = claimed
    if request.approved_at:
        # The approval's commit, its publish and the broker's delivery to this worker.
        phases.ms["approval_to_worker"] = round((entered - request.approved_at).total_seconds() * 1000, 1)

    if not request.document_hash:
        # Submitted before approvals bound content: nobody can say what was approved, so it never
        # starts (checked first: its old fingerprint would only say "mismatch").
        return _fail(request_id, action="dispatch.refused", reason=content.unbound_reason(request),
                     details={"code": content.CONTENT_UNBOUND}, reason_code=content.CONTENT_UNBOUND)
    refusal = _refusal(request)
    phases.mark("refusal_checks")
    if refusal:
        return _fail(request_id, action="dispatch.refused", reason=refusal)

    # Everything AWS is asked before Start goes out at once (dispatch_checks): the targets' scope, the
    # content hash and the execution preview on the read session, in threads, while this thread
    # reads the allowlist, checks the organization and assumes the requester's session. The answers
    # are judged below in the order the checks always ran, so the outcome and its audit do not
    # depend on which answer came first; Start goes out only after every one of them passed.
    scope = not maybe_started and bool(request.resources)
    # Targets are re-checked now, not only at submit: tags may have changed since. (A resumed
    # attempt skips this: its first attempt checked, and may already be running.)
    allowlist = selectors.team_resource_allowlist(request.team, request.account) if scope else frozenset()
    checks = dispatch_checks.start(request, scope=scope, allowlist=allowlist)
    lost = organization_error = None
    if not maybe_started and request.is_multi_account:
        # The team's account/OU grants and what the OUs cover are re-checked now (Organizations).
        try:
            lost = locations.dispatch_refusal(request)
        except aws.AwsError as error:
            organization_error = error
    requester = request.requester.get_username()
    session = session_error = None
    try:
        # A fresh session naming the requester, for this one Start (never cached). Made while the
        # reads are in flight; if a check below refuses, it is dropped unused.
        session = aws.mutating_session(
            region=request.region, role_arn=request.account.dispatch_role_arn,
            session_name=aws.role_session_name("delegate-req", str(request.pk), requester),
            source_identity=aws.sts_source_identity(requester),
            tags=aws.session_tags(requester=requester, team=request.team.name, **{"request-id": str(request.pk)}))
    except aws.AwsError as error:
        session_error = error  # what Start would have met: reported there, after the checks
    checks.wait()
    phases.mark("aws_checks")
    phases.add({f"{name}_check": ms for name, ms in checks.timings_ms.items() if not name.startswith("paced_")})
    phases.add({name: ms for name, ms in checks.timings_ms.items() if name.startswith("paced_")})
    if session is not None:
        phases.add(session.timings_ms)

    if checks.wanted("scope"):
        try:
            outside = checks.result("scope")
        except aws.TransientAwsError as error:
            return _put_back(request_id, attempts=attempts, reason=f"inventory check failed: {error.code}",
                             details={"error": error.code})
        except aws.PermanentAwsError as error:
            return _fail(request_id, action="dispatch.failed",
                         reason=f"Inventory check failed: {error.code} {error.message}")
        if outside:
            return _fail(request_id, action="dispatch.refused",
                         reason=f"Targets left the team's scope: {', '.join(outside)}", details={"resources": outside})

    if isinstance(organization_error, aws.TransientAwsError):
        return _put_back(request_id, attempts=attempts, reason=f"organization check failed: {organization_error.code}",
                         details={"error": organization_error.code})
    if organization_error is not None:
        lost = (f"AWS Organizations refused the scope check: {organization_error.code} "
                f"{organization_error.message}").strip()
    if lost:
        return _fail(request_id, action="dispatch.refused", reason=f"Out of the team's scope: {lost}",
                     details={"code": "location_not_granted", "location_targets": request.location_targets},
                     reason_code="location_not_granted")

    # The content the approval bound must be what SSM serves under that exact version now. A resumed
    # attempt checks too: if its first attempt never reached AWS, the Start below would start whatever
    # SSM serves now (the lifecycle machine found a swap started that way under the old approval).
    try:
        found, hash_type = checks.result("content")
    except aws.TransientAwsError as error:
        return _put_back(request_id, attempts=attempts, reason=f"content check failed: {error.code}",
                         details={"error": error.code})
    except aws.PermanentAwsError as error:  # the document or version is gone: what was approved no longer exists
        found, hash_type = f"(unavailable: {error.code})", ""
    if found != request.document_hash:
        content.record_changed_content(request, found=found, hash_type=hash_type, actor=None, where="dispatch")
        reason = content.content_changed_reason(request, found, earlier_attempt_unanswered=maybe_started)
        return _fail(request_id, action="dispatch.refused", reason=reason,
                     details={"code": content.CONTENT_CHANGED, "bound_hash": request.document_hash,
                              "found_hash": found}, reason_code=content.CONTENT_CHANGED)

    # What AWS would touch must be what the approval bound: the execution preview was asked again.
    if checks.wanted("preview"):
        bound = execution_preview.bound_figures(request)
        now_preview = checks.result("preview")
        if now_preview.get("transient"):
            return _put_back(request_id, attempts=attempts, reason=f"execution preview failed: {now_preview['message']}",
                             details={"error": now_preview["message"][:300]})
        found = now_preview.get("figures")
        if found != bound:
            execution_preview.record_changed(request, found=found, message=now_preview.get("message", ""))
            return _fail(request_id, action="dispatch.refused",
                         reason=execution_preview.changed_reason(request, found, now_preview.get("message", "")),
                         details={"code": execution_preview.PREVIEW_CHANGED, "bound": bound, "found": found},
                         reason_code=execution_preview.PREVIEW_CHANGED)
    phases.mark("judged")

    # No transaction is open during the network calls. A retry reaches this line again with
    # the same client_token, which is what stops SSM starting a duplicate.
    try:
        if session_error is not None:
            raise session_error
        call = aws.start_automation(
            region=request.region,
            role_arn=request.account.dispatch_role_arn,
            session_name=session.session.role_session_name,
            prepared=session,
            body=start_body_for(request),  # the same builder the preview page shows
            client_token=request.client_token,
            execution_tags=aws.session_tags(**{"delegate:request-id": str(request.pk), "delegate:requester": requester,
                                               "delegate:team": request.team.name}),
        )
    except aws.PermanentAwsError as error:
        if error.code == "IdempotentParameterMismatch":
            # One request never sends two different parameter sets under its token: this is a bug.
            log.error("dispatch.idempotency_mismatch", automation_request=request_id, client_token=str(request.client_token))
        return _fail(request_id, action="dispatch.failed",
                     reason=f"AWS refused to start the run: {error.code} {error.message}".strip(),
                     details={"error": error.code, "aws_request_id": error.aws_request_id,
                              "operation": error.operation})
    except aws.TransientAwsError as error:
        details = {"error": error.code, "aws_request_id": error.aws_request_id, "operation": error.operation}
        if maybe_started or error.maybe_accepted:
            return _hold(request_id, attempts=attempts, reason=f"AWS did not confirm the start: {error.code}",
                         details=details)
        return _put_back(request_id, attempts=attempts, reason=f"AWS asked us to wait: {error.code}", details=details)
    phases.mark("start")
    phases.add({"start_call": call.extra.get("timings_ms", {}).get("start_call", 0.0)})
    phases.add({f"paced_{op}": seconds * 1000 for op, seconds in pacing.last_waits().items()})
    return _record_start(request_id, call, phases)


def _record_start(request_id: int, call: aws.AwsCall, phases: Phases | None = None) -> str:
    with transaction.atomic():
        request = (AutomationRequest.objects.select_for_update(of=("self",))
                   .select_related("team", "account", "runbook", "runbook_version")
                   .defer("runbook_version__content").get(pk=request_id))
        if request.status != Status.DISPATCHING:
            return "skipped"  # cannot happen under the attempt lock; harmless if it did
        Execution.objects.get_or_create(request=request, defaults={"execution_id": call.execution_id,
                                                                   "aws_status": "Pending"})
        transition(request, to=Status.RUNNING, actor=None, action="dispatch.started", aws=call, row_locked=True,
                   details={"execution_id": call.execution_id, "document": request.runbook.name,
                            "version": request.runbook_version.version, "assumed_role_arn": call.assumed_role_arn})
        DispatchOutbox.objects.filter(pk=request_id).update(state=State.STARTED, last_error="")
        approved_at = request.approved_at
    if approved_at:
        metrics.DISPATCH_LATENCY.observe(max(0.0, (timezone.now() - approved_at).total_seconds()))
    if phases is not None:
        phases.mark("record")
    log.info("dispatch.started", automation_request=request_id, execution_id=call.execution_id,
             aws_request_id=call.aws_request_id, phases_ms=phases.ms if phases else {})
    return "started"


def request_mark_dispatch_failed(*, request_id: int, reason: str) -> None:
    """Fail a request still dispatching (an operator's decision; the task never calls this on its own,
    because after an unexpected error AWS may already be running the execution)."""
    _fail(request_id, action="dispatch.failed", reason=reason)


def dispatch_publish_after_approval(request_id: int) -> None:
    """The on-commit fast path after an approval: publish once, then mark the outbox row enqueued.

    A broker error is logged and swallowed: the outbox row stays pending and the sweeper
    publishes it later. Marking the row enqueued keeps the sweeper from publishing it again
    while the message waits in the queue.
    """
    try:
        publishing.publish_dispatch(request_id, source="approval")
    except Exception as error:  # noqa: BLE001 - broker down: the outbox row stays pending for the sweeper
        log.warning("dispatch.publish_failed", automation_request=request_id, error=str(error)[:300])
        return
    try:
        dispatch_outbox_mark_enqueued(request_id=request_id)
    except Exception as error:  # noqa: BLE001 - the row stays pending; a second message is harmless
        log.warning("dispatch.mark_enqueued_failed", automation_request=request_id, error=str(error)[:300])


def dispatch_outbox_mark_enqueued(*, request_id: int) -> None:
    """After a successful on-commit publish: the message is in the queue, so the sweeper leaves
    the row alone for one grace period (unless a worker already claimed it)."""
    grace = dt.timedelta(seconds=settings.DELEGATE_OUTBOX_GRACE_SECONDS)
    DispatchOutbox.objects.filter(pk=request_id, state=State.PENDING, next_attempt_at__lte=timezone.now()).update(
        state=State.ENQUEUED, next_attempt_at=timezone.now() + grace)


def dispatch_outbox_sweep(*, publish=None, source: str = "sweeper", limit: int = 100) -> int:
    """Republish outbox rows that are due: never published, lost by the broker, put back for
    later, or `calling` with a lease that ran out (the worker died mid-dispatch).

    Row locks with SKIP LOCKED let several sweepers run side by side on PostgreSQL.
    """
    if publish is None:
        publish = partial(publishing.publish_dispatch, source=source)
    now = timezone.now()
    grace = dt.timedelta(seconds=settings.DELEGATE_OUTBOX_GRACE_SECONDS)
    with transaction.atomic():
        due = DispatchOutbox.objects.filter(
            Q(state__in=(State.PENDING, State.ENQUEUED), request__status=Status.APPROVED)
            | Q(state=State.CALLING, request__status=Status.DISPATCHING),
            next_attempt_at__lte=now,
        ).order_by("next_attempt_at")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        rows = list(due[:limit])
        waiting = [row.pk for row in rows if row.state != State.CALLING]
        calling = [row.pk for row in rows if row.state == State.CALLING]
        # Claim them for one grace period (a lease for calling rows); if this publish is lost
        # too, the next sweep after that retries.
        DispatchOutbox.objects.filter(pk__in=waiting).update(state=State.ENQUEUED, next_attempt_at=now + grace)
        DispatchOutbox.objects.filter(pk__in=calling).update(next_attempt_at=now + _lease())
    published = 0
    for index, row in enumerate(rows):
        try:
            publish(row.pk)
        except Exception as error:  # noqa: BLE001 - the broker is down: leave the rest for the next sweep
            log.warning("outbox.publish_failed", automation_request=row.pk, error=str(error)[:300])
            # Nothing was queued for these: due again at once, for the next sweep.
            unsent = rows[index:]
            DispatchOutbox.objects.filter(pk__in=[r.pk for r in unsent if r.state != State.CALLING],
                                          state=State.ENQUEUED).update(state=State.PENDING, next_attempt_at=now)
            DispatchOutbox.objects.filter(pk__in=[r.pk for r in unsent if r.state == State.CALLING],
                                          state=State.CALLING).update(next_attempt_at=now)
            break
        published += 1
        metrics.OUTBOX_REPUBLISHED.labels(state=row.state).inc()
    if published:
        log.info("outbox.swept", published=published, resumed=len(calling))
    return published
