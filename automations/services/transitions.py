"""The one guarded function that changes a request's status."""
from __future__ import annotations

from django.db import transaction

from automations import audit
from automations.errors import TransitionNotAllowed
from automations.models import TRANSITIONS, AutomationRequest
from automations.services import notifications


def transition(request: AutomationRequest, *, to: str, actor, action: str | None = None,
               details: dict | None = None, client=None, aws=None, row_locked: bool = False,
               **fields) -> AutomationRequest:
    """Move `request` to `to` if allowed and nobody moved it first; audit it in the same transaction.

    Filtering the UPDATE on the status we *read* turns a double click, a second approver or a
    redelivered task into a clean "0 rows updated" instead of a double transition.
    `row_locked`: the caller read `request` with select_for_update in this transaction, so the row
    is what it holds plus `fields`, and it is not read again.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("transition() must run inside transaction.atomic()")
    old = request.status
    if to not in TRANSITIONS.get(old, frozenset()):
        raise TransitionNotAllowed(current=old, target=to)
    updated = AutomationRequest.objects.filter(pk=request.pk, status=old).update(status=to, **fields)
    if not updated:
        current = AutomationRequest.objects.filter(pk=request.pk).values_list("status", flat=True).first()
        raise TransitionNotAllowed(current=current or old, target=to,
                                   detail="Someone else changed this request first; reload and try again.")
    if row_locked and not any(hasattr(value, "resolve_expression") for value in fields.values()):
        request.status = to
        for name, value in fields.items():
            setattr(request, name, value)
    else:
        _refresh_keeping_relations(request)
    audit.record(
        action=action or f"request.{to}", actor=actor, request=request,
        details={"from": old, "to": to, **(details or {})}, client=client, aws=aws,
    )
    notifications.on_transition(request, old, to)  # after commit only; never raises into this transaction
    return request


def _refresh_keeping_relations(request: AutomationRequest) -> None:
    """refresh_from_db(), keeping the related rows already loaded (team, account, runbook, ...).

    refresh_from_db forgets every cached foreign key, so the audit record and the caller's next
    reads fetched the same team, runbook and account again: three statements per transition.
    A relation is kept only while the row still points at the same object.
    """
    cached = [(field, field.get_cached_value(request)) for field in request._meta.concrete_fields
              if field.is_relation and field.is_cached(request)]
    request.refresh_from_db()
    for field, value in cached:
        if value is not None and getattr(request, field.attname) == value.pk and not field.is_cached(request):
            field.set_cached_value(request, value)
