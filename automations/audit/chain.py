"""The audit log's only writer, and the chain verification.

Every function in automations.services that changes state calls record() inside its own
transaction, so an event exists exactly when the change committed. Events are hash-chained:
hash = SHA-256(prev_hash || canonical JSON of the chained fields), with a gapless sequence
assigned under one lock, so editing, deleting or reordering any row breaks the chain at that
row. Signed digests written outside the database (automations.audit.digests) pin the head of
the chain from time to time, so deleting the newest events, or rewriting the whole chain, is
caught as well; every committed event also goes to an external stream at once
(automations.audit.stream), which closes the window after the newest digest; and events leave the
table only under a signed archive manifest (automations.audit.archive). docs/audit.md describes
the format and the threat model; manage.py verify_audit checks all of it.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from automations import locks
from automations.canonical import _default as canonical_default
from automations.canonical import json_roundtrip
from automations.models import AuditEvent

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest

    from automations.models import AutomationRequest

GENESIS_HASH = "0" * 64

# The hash input, in this order of names (canonical JSON sorts them anyway). Changing this
# list changes every hash: never do it without a format version (docs/audit.md).
CHAINED_FIELDS = (
    "sequence", "occurred_at", "actor_id", "actor_name", "action", "request_id", "team", "runbook",
    "resources", "account_id", "region", "details", "client_ip", "user_agent", "role_session_name",
    "source_identity", "aws_request_id", "execution_id",
)
_TEXT_LIMITS = {
    field.name: field.max_length for field in AuditEvent._meta.fields
    if field.max_length and field.name not in ("prev_hash", "hash")
}
_MAX_RESOURCES = 500


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
    locks.hold_for_transaction(locks.AUDIT_CHAIN)  # serialises chain appends across processes


#
# Hostile input: an audit write must never fail (and so roll back the change it records)
# because of what a user typed. PostgreSQL refuses NUL in text and jsonb; UTF-8 refuses lone
# surrogates (which JSON escapes can produce); varchar refuses overlong values.
#

def clean_text(value: str, limit: int | None = None) -> str:
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:limit] if limit else value


def _clean_json(value):
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, (list, tuple)):
        return [_clean_json(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(str(key)): _clean_json(item) for key, item in value.items()}
    return value


# canonical_json's exact settings, built once: json.dumps would build a new encoder per event,
# which is a fifth of verify_audit's time over a million events. test_audit_integrity checks
# that both give the same bytes.
_canonical_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                     default=canonical_default).encode


def compute_hash(prev_hash: str, fields: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + _canonical_encode(fields).encode()).hexdigest()


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
    fields = {
        "team": team, "runbook": runbook, "resources": list(resources), "account_id": account_id, "region": region,
    }
    if request is not None:
        fields = {
            "team": request.team.name,
            "runbook": request.runbook.name,
            "resources": list(request.resources),
            # A multi-account run's child execution names its own account and Region.
            "account_id": account_id or request.account.account_id,
            "region": region or request.region,
        }
    if aws is not None:
        fields.update({
            "role_session_name": getattr(aws, "role_session_name", "") or "",
            "source_identity": getattr(aws, "source_identity", "") or "",
            "aws_request_id": getattr(aws, "aws_request_id", "") or "",
            "execution_id": getattr(aws, "execution_id", "") or "",
        })
    fields.update(
        actor_name=(actor.get_username() if actor is not None else "") or actor_name or "system",
        action=action,
        user_agent=client.user_agent if client else "",
    )
    for name, value in fields.items():
        if name in _TEXT_LIMITS:
            fields[name] = clean_text(str(value), _TEXT_LIMITS[name])
    fields["resources"] = [clean_text(str(item), 256) for item in fields["resources"][:_MAX_RESOURCES]]

    _lock_chain()
    head = AuditEvent.objects.order_by("-sequence").values("sequence", "hash", "occurred_at").first()
    now = timezone.now()
    # occurred_at never goes backwards along the sequence, even with app servers' clocks a little
    # apart: that keeps "sequence order = time order", which time-range search relies on.
    if head and head["occurred_at"] > now:
        now = head["occurred_at"]
    event = AuditEvent(
        sequence=head["sequence"] + 1 if head else 1,
        prev_hash=head["hash"] if head else GENESIS_HASH,
        # Microseconds survive both PostgreSQL and SQLite, so the hash recomputes exactly.
        occurred_at=now,
        actor=actor if actor is not None and actor.pk else None,
        request=request,
        details=json_roundtrip(_clean_json(details or {})),
        client_ip=client.ip if client else None,
        **fields,
    )
    event.hash = compute_hash(event.prev_hash, chained_fields(event))
    event.save(force_insert=True)
    # Also to the external stream, once (and only if) this transaction commits: closes the tail window.
    from automations.audit import stream as audit_stream

    audit_stream.publish_on_commit(event)
    return event


#
# Verification
#

@dataclass(frozen=True)
class ChainProblem:
    sequence: int
    reason: str


@dataclass
class ChainReport:
    """What a chain check saw: the first problem (if any) and the last event that verified."""

    problem: ChainProblem | None = None
    checked: int = 0
    first_sequence: int | None = None
    last_sequence: int | None = None
    last_hash: str | None = None


_ROW_FIELDS = (*CHAINED_FIELDS, "prev_hash", "hash")


# On PostgreSQL the rows are read with plain SQL: the timestamp comes back already in canonical
# form and the JSON as text, which makes verification about three times faster than going
# through the ORM's converters (bench/audit.py measures it over 1M events).
_PG_ROWS = (
    "SELECT sequence, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), actor_id,"
    " actor_name, action, request_id, team, runbook, resources::text, account_id, region, details::text,"
    " client_ip, user_agent, role_session_name, source_identity, aws_request_id, execution_id, prev_hash, hash"
    f" FROM {AuditEvent._meta.db_table} WHERE sequence > %s AND sequence <= %s ORDER BY sequence LIMIT %s"
)
_RESOURCES, _DETAILS = CHAINED_FIELDS.index("resources"), CHAINED_FIELDS.index("details")


def _pg_chain_rows(start: int | None, end: int | None, chunk_size: int) -> Iterator[tuple]:
    after, end = (start - 1) if start is not None else -(2**63), end if end is not None else 2**63 - 1
    loads = json.loads
    while True:
        with connection.cursor() as cursor:
            cursor.execute(_PG_ROWS, [after, end, chunk_size])
            batch = cursor.fetchall()
        if not batch:
            return
        for row in batch:
            values = list(row[:-2])
            values[_RESOURCES], values[_DETAILS] = loads(values[_RESOURCES]), loads(values[_DETAILS])
            yield dict(zip(CHAINED_FIELDS, values)), row[-2], row[-1]
        after = batch[-1][0]


def chain_rows(start: int | None, end: int | None, chunk_size: int = 10000) -> Iterator[tuple]:
    """(fields, prev_hash, hash) per event in sequence order, in keyset chunks (constant memory)."""
    if connection.vendor == "postgresql":
        yield from _pg_chain_rows(start, end, chunk_size)
        return
    after = (start - 1) if start is not None else None
    while True:
        rows = AuditEvent.objects.order_by("sequence")
        if after is not None:
            rows = rows.filter(sequence__gt=after)
        if end is not None:
            rows = rows.filter(sequence__lte=end)
        batch = list(rows.values_list(*_ROW_FIELDS)[:chunk_size])
        if not batch:
            return
        for row in batch:
            yield dict(zip(CHAINED_FIELDS, row[:-2])), row[-2], row[-1]
        after = batch[-1][0]


def check_chain(*, start: int | None = None, end: int | None = None, anchor_hash: str | None = None,
                rows: Iterable[tuple[dict, str, str]] | None = None) -> ChainReport:
    """Recompute the chain from `start` (default: the first event) to `end` (default: the head).

    Each event must carry the next sequence number, point at the previous event's hash, and
    hash to its stored hash. The first event of the range must point at `anchor_hash`: the
    genesis hash for sequence 1, or the last hash of a signed archive manifest. Without an anchor
    a range check trusts the stored prev_hash of its first event (and says so).
    `rows` lets an exported archive be checked with the same code.
    """
    report = ChainReport()
    expected_prev = anchor_hash
    if expected_prev is None and start in (None, 1):
        expected_prev = GENESIS_HASH
    expected_sequence = start
    for fields, prev_hash, stored_hash in (rows if rows is not None else chain_rows(start, end)):
        sequence = fields["sequence"]
        if expected_sequence is not None and sequence != expected_sequence:
            report.problem = ChainProblem(expected_sequence, f"event {expected_sequence} is missing"
                                                             f" (next found: {sequence})")
            return report
        if expected_prev is not None and prev_hash != expected_prev:
            report.problem = ChainProblem(sequence, "prev_hash does not match the previous event's hash"
                                          if report.checked else "prev_hash does not match the anchor hash")
            return report
        if compute_hash(prev_hash, fields) != stored_hash:
            report.problem = ChainProblem(sequence, "content does not match its hash (the event was edited)")
            return report
        if report.first_sequence is None:
            report.first_sequence = sequence
        report.checked += 1
        report.last_sequence, report.last_hash = sequence, stored_hash
        expected_prev, expected_sequence = stored_hash, sequence + 1
    if rows is None and end is not None and expected_sequence is not None and expected_sequence <= end \
            and AuditEvent.objects.filter(sequence__gt=end).exists():
        # Events after the range exist, so the ones between the last found and `end` were deleted.
        report.problem = ChainProblem(expected_sequence, f"event {expected_sequence} is missing")
    return report


def verify_chain(*, start: int | None = None, end: int | None = None, anchor_hash: str | None = None) -> ChainProblem | None:
    """The first broken event, or None when every hash holds."""
    return check_chain(start=start, end=end, anchor_hash=anchor_hash).problem
