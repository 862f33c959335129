"""PostgreSQL advisory locks: the one helper every "one at a time across processes" rule uses.

The keys live here, in one place, so they never collide.
"""
from __future__ import annotations

import contextlib
import time

from django.db import DatabaseError, connection

# One-bigint key space.
AUDIT_CHAIN = 0x44454C4547415445  # "DELEGATE": serialises audit chain appends
AUDIT_DIGEST = 0x4445_4C44_4947_4553  # "DELDIGES": one digest writer at a time
DISPATCH_REQUEST_BASE = 0x4450 << 48  # "DP" + request id: one dispatch attempt per request
STATUS_SYNC = 0x5353 << 48  # "SS": one status sync at a time
# Two-int key space (PostgreSQL keeps it apart from the bigint one): (class, crc of account:region).
REGION_CAP_CLASS = 0x43415053  # "CAPS": 'count running, then claim' per account and region


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def hold_for_transaction(*key: int) -> None:
    """Take a transaction-level lock (released at commit or rollback); waits for it.

    SQLite (the demo) runs transactions as BEGIN IMMEDIATE with one worker: writers are already
    serialised, so this is a no-op there.
    """
    if _postgres():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_xact_lock({', '.join(['%s'] * len(key))})", list(key))


@contextlib.contextmanager
def held_for_session(key: int, *, patience_seconds: float = 0.0):
    """Try a session-level lock for the `with` block; yields False if another session holds it.

    With `patience_seconds`, look again every 0.1 s until then: a holder that just died may need a
    moment for PostgreSQL to notice its closed socket. If this process dies, PostgreSQL drops the
    lock with its connection. On SQLite it always yields True (the demo runs one worker).
    """
    if not _postgres():
        yield True
        return
    deadline = time.monotonic() + patience_seconds
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            held = cursor.fetchone()[0]
        if held or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except DatabaseError:  # the connection died, and the lock with it
                pass


def release_session_locks() -> None:
    """Release every session-level lock this connection holds (after each task: a worker keeps its
    connection, and a lock it forgot must not stay with it). No-op without an open connection."""
    if not _postgres() or connection.connection is None or connection.in_atomic_block:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_all()")
    except DatabaseError:  # a dead connection held nothing
        pass
