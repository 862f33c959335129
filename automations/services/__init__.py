"""The service layer: the functions that write, each under the three rules below.

Every function here (1) checks permission via automations.policy, (2) changes a
request's status only via transitions.transition, which writes the audit event in the same
transaction, and (3) hands work to Celery or AWS only after commit (dispatch via the outbox).
Functions take the acting user explicitly as `actor`.
"""
from automations.services.bulk import requests_approve_bulk
from automations.services.catalog import runbook_catalog_sync, runbook_sync
from automations.services.dispatch import (
    dispatch_outbox_mark_enqueued,
    dispatch_outbox_sweep,
    request_dispatch,
    request_mark_dispatch_failed,
)
from automations.services.requests import (
    approvals_tick,
    request_amend,
    request_approve,
    request_cancel,
    request_comment,
    request_expire_stale,
    request_reject,
    request_send_back,
    request_submit,
    request_withdraw,
)
from automations.services.status import execution_statuses_sync

__all__ = (
    "approvals_tick",
    "dispatch_outbox_mark_enqueued", "dispatch_outbox_sweep", "execution_statuses_sync", "request_amend", "request_approve",
    "request_cancel", "request_comment", "request_dispatch", "request_expire_stale", "request_mark_dispatch_failed",
    "request_reject", "request_send_back", "request_submit", "request_withdraw", "requests_approve_bulk",
    "runbook_catalog_sync", "runbook_sync",
)
