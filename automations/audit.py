"""The audit log's only writer, and the chain verification.

Every function in automations.services that changes state calls record() inside its own
transaction, so an event exists exactly when the change committed. Events are hash-chained:
hash = SHA-256(prev_hash || canonical JSON of the chained fields).
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from automations.canonical import canonical_json, json_roundtrip
from automations.models import AuditEvent

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest

    from automations.models import AutomationRequest

GENESIS_HASH = "0" * 64
# Arbitrary constant key for pg_advisory_xact_lock: serialises chain appends across processes.
_CHAIN_LOCK_KEY = 0x44454C4547415445  # "DELEGATE"

CHAINED_FIELDS = (
    "sequence", "occurred_at", "actor_id", "actor_name", "action", "request_id", "team", "runbook",
    "resources", "account_id", "region", "details", "client_ip", "user_agent", "role_session_name",
    "source_identity", "aws_request_id", "execution_id",
)


@dataclass(frozen=True)
class ClientInfo:
    """Where a web or API action came from. The IP honours only the configured proxy count."""

    ip: str | None = None
    user_agent: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> ClientInfo:
        ip = request.META.get("REMOTE_ADDR")
        proxies = settings.TRUSTED_PROXY_COUNT
        if proxies:
            # The n-th address from the right was appended by our own outermost trusted proxy;
            # anything to its left is client-supplied and may be forged.
            chain = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
            if len(chain) >= proxies:
                ip = chain[-proxies]
        return cls(ip=_valid_ip(ip), user_agent=request.META.get("HTTP_USER_AGENT", "")[:512])


def _valid_ip(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
    # SQLite (the demo) runs transactions as BEGIN IMMEDIATE: writers are already serialised.


def compute_hash(prev_hash: str, fields: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_json(fields)).hexdigest()


def chained_fields(event: AuditEvent) -> dict:
    # canonical_json renders occurred_at in UTC, so the database's time zone cannot change the hash.
    return {name: getattr(event, name) for name in CHAINED_FIELDS}


def record(
    *,
    action: str,
    actor: AbstractBaseUser | None,
    request: AutomationRequest | None = None,
    details: dict | None = None,
    client: ClientInfo | None = None,
    aws: object | None = None,
    team: str = "",
    runbook: str = "",
    resources: Iterable[str] = (),
    account_id: str = "",
    region: str = "",
    actor_name: str = "",
) -> AuditEvent:
    """Append one event. Must run inside the caller's transaction, so it commits with the change."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit.record() must run inside transaction.atomic()")
    _lock_chain()
    head = AuditEvent.objects.order_by("-sequence").values("sequence", "hash").first()
    fields = {
        "team": team, "runbook": runbook, "resources": list(resources), "account_id": account_id, "region": region,
    }
    if request is not None:
        fields = {
            "team": request.team.name,
            "runbook": request.runbook.name,
            "resources": list(request.resources),
            "account_id": request.account.account_id,
            "region": request.region,
        }
    aws_fields = {}
    if aws is not None:
        aws_fields = {
            "role_session_name": getattr(aws, "role_session_name", "") or "",
            "source_identity": getattr(aws, "source_identity", "") or "",
            "aws_request_id": getattr(aws, "aws_request_id", "") or "",
            "execution_id": getattr(aws, "execution_id", "") or "",
        }
    event = AuditEvent(
        sequence=head["sequence"] + 1 if head else 1,
        prev_hash=head["hash"] if head else GENESIS_HASH,
        # Microseconds survive both PostgreSQL and SQLite, so the hash recomputes exactly.
        occurred_at=timezone.now(),
        actor=actor if actor is not None and actor.pk else None,
        actor_name=(actor.get_username() if actor is not None else "") or actor_name or "system",
        action=action,
        request=request,
        details=json_roundtrip(details or {}),
        client_ip=client.ip if client else None,
        user_agent=client.user_agent if client else "",
        **fields,
        **aws_fields,
    )
    event.hash = compute_hash(event.prev_hash, chained_fields(event))
    event.save(force_insert=True)
    return event


@dataclass(frozen=True)
class ChainProblem:
    sequence: int
    reason: str


def verify_chain(*, start: int | None = None, end: int | None = None, anchor_hash: str | None = None) -> ChainProblem | None:
    """Recompute the chain; return the first broken event, or None when every hash holds.

    `start`: begin at this sequence, trusting the stored prev_hash of that event unless
    `anchor_hash` (e.g. from an archive manifest) is given.
    """
    events = AuditEvent.objects.order_by("sequence")
    if start is not None:
        events = events.filter(sequence__gte=start)
    if end is not None:
        events = events.filter(sequence__lte=end)
    expected_prev = anchor_hash
    expected_sequence = start
    for event in events.iterator(chunk_size=5000):
        if expected_sequence is not None and event.sequence != expected_sequence:
            return ChainProblem(expected_sequence, f"event {expected_sequence} is missing (next found: {event.sequence})")
        if expected_prev is None:
            expected_prev = GENESIS_HASH if event.sequence == 1 else event.prev_hash
        if event.prev_hash != expected_prev:
            return ChainProblem(event.sequence, "prev_hash does not match the previous event's hash")
        if compute_hash(event.prev_hash, chained_fields(event)) != event.hash:
            return ChainProblem(event.sequence, "content does not match its hash")
        expected_prev = event.hash
        expected_sequence = event.sequence + 1
    return None
