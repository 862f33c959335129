"""Bulk approval: one approver approves several identical low-risk requests in one action.

Nothing here decides anything new. The selection as a whole must be one group of identical
requests under a low-risk policy (automations.policy.queue.bulk_key); otherwise nothing is
approved and the refusal is audited. Then each request goes through request_approve on its own,
in its own transaction: its own fingerprint check, its own seat, its own audit event (which names
the others of the action), self-approval refused as always. One refusal never stops or hides the
others: the caller gets an outcome per request.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from automations import audit, policy
from automations.audit import ClientInfo
from automations.errors import DomainError, InvalidRequest
from automations.models import AutomationRequest
from automations.services.requests import request_approve


@dataclass(frozen=True)
class BulkOutcome:
    """What happened to one request of a bulk approval."""

    request_id: int
    ok: bool
    status: str  # the request's status afterwards ("" when refused before it was touched)
    code: str  # "" when it went through
    detail: str


def requests_approve_bulk(*, requests: list[AutomationRequest], actor, expected_fingerprints: dict[int, str],
                          comment: str = "", client: ClientInfo | None = None) -> list[BulkOutcome]:
    """Approve each of `requests` (fetched through selectors by the caller) one by one.

    expected_fingerprints: {request id: the fingerprint the approver was shown}; a request that
    changed since (amended, re-fingerprinted) is refused, not approved unseen.
    """
    ids = [item.pk for item in requests]
    if not 2 <= len(requests) <= policy.MAX_BULK:
        raise _refused(actor, client, ids, InvalidRequest(
            f"Select between 2 and {policy.MAX_BULK} requests to approve together.", code="bulk_size"))
    keys = {policy.bulk_key(item) for item in requests}
    if None in keys:
        raise _refused(actor, client, ids, InvalidRequest(
            "Only waiting requests whose policy is rated low risk can be approved together.",
            code="bulk_not_low_risk"))
    if len(keys) != 1:
        raise _refused(actor, client, ids, InvalidRequest(
            "These requests are not identical (runbook, version, parameters other than the targets, account, "
            "region, rate control, alarm and run-at time must match); approve them one by one.",
            code="bulk_not_identical"))
    outcomes = []
    for item in requests:
        others = tuple(pk for pk in ids if pk != item.pk)
        if expected_fingerprints.get(item.pk) != item.fingerprint:
            outcomes.append(BulkOutcome(item.pk, False, item.status, "changed_since_viewed",
                                        "It changed since the queue showed it; open it and decide on its own."))
            continue
        try:
            result = request_approve(request=item, actor=actor, comment=comment, client=client, bulk_with=others)
        except DomainError as error:
            outcomes.append(BulkOutcome(item.pk, False, item.status, error.code, error.detail))
        else:
            outcomes.append(BulkOutcome(item.pk, True, result.status, "", ""))
    return outcomes


def _refused(actor, client, ids: list[int], error: DomainError) -> DomainError:
    with transaction.atomic():
        audit.record(action="approval.refused", actor=actor, client=client,
                     details={"code": error.code, "detail": error.detail, "bulk": ids})
    return error
