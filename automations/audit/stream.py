"""The external audit stream: every committed audit event, also written outside the database at once.

The chain and the signed digests cannot show that events appended after the newest digest were
deleted. The stream closes that window: when the transaction that recorded an event commits
(on_commit), the event goes, with its sequence and hash, to an append-only destination the
database cannot rewrite (DELEGATE_AUDIT_STREAM):

- ``file:/path/audit-stream.jsonl``: one canonical JSON line per event (the demo default, under var/);
- ``syslog+tcp://host:port`` or ``syslog+tls://host:port``: RFC 5424 messages, octet-counted
  (RFC 6587 / RFC 5425), facility "log audit", for a SIEM; DELEGATE_AUDIT_STREAM_TLS_CA names the
  CA bundle that signs the collector's certificate (default: the system's);
- ``off``.

Writing never blocks or fails the transaction that produced the event: the on_commit hook only
puts the line in a bounded in-process queue (DELEGATE_AUDIT_STREAM_QUEUE_SIZE) that one background
thread drains. When the queue is full or the destination is down the line is not lost silently:
the sequence range is remembered, a gap notice is written to the stream itself, and as soon as the
destination answers again the sender re-reads that range from the database by sequence and sends
it (duplicates are harmless: a line is identified by its sequence and hash). A process killed with
lines still queued leaves events missing from the stream, which `verify_audit --against` reports.
"""
from __future__ import annotations

import atexit
import json
import os
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import structlog
from django.conf import settings
from django.db import transaction

from automations.canonical import canonical_json

log = structlog.get_logger(__name__)

# RFC 5424: facility 13 ("log audit") * 8 + severity 6 (informational).
_PRI = 13 * 8 + 6
# RFC 5612 reserves enterprise number 32473 for documentation and examples; SIEMs key on the SD-ID.
_SD_ID = "delegate@32473"
_BOM = "\ufeff"


#
# Lines
#

def line_for(event) -> bytes:
    """The stream's record of one event: canonical JSON with sequence, hashes and every chained field."""
    from automations import audit

    return canonical_json({"v": 1, "sequence": event.sequence, "prev_hash": event.prev_hash, "hash": event.hash,
                           "event": audit.chained_fields(event)})


def gap_line(first: int, last: int, reason: str) -> bytes:
    return canonical_json({"v": 1, "gap": {"first_sequence": first, "last_sequence": last}, "reason": reason,
                           "host": socket.gethostname(), "pid": os.getpid(),
                           "at": datetime.now(timezone.utc)})


def syslog_frame(line: bytes) -> bytes:
    """One RFC 5424 message, octet-counted for TCP."""
    record = json.loads(line)
    timestamp = (record.get("event") or {}).get("occurred_at") or datetime.now(timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    host = "".join(ch for ch in socket.gethostname() if 33 <= ord(ch) <= 126)[:255] or "-"
    if "sequence" in record:
        msgid, data = "audit", f'[{_SD_ID} sequence="{record["sequence"]}" hash="{record["hash"]}"]'
    else:
        gap = record["gap"]
        msgid, data = "gap", f'[{_SD_ID} first="{gap["first_sequence"]}" last="{gap["last_sequence"]}"]'
    message = f"<{_PRI}>1 {timestamp} {host} delegate {os.getpid()} {msgid} {data} {_BOM}".encode() + line
    return f"{len(message)} ".encode() + message


#
# Destinations
#

class FileSink:
    """Appends lines with O_APPEND (one write per batch), reopening each time so log rotation works."""

    def __init__(self, path: str):
        self.path = Path(path)

    def send(self, lines: list[bytes]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, b"".join(line + b"\n" for line in lines))
        finally:
            os.close(fd)

    def close(self) -> None:
        pass


class SyslogSink:
    def __init__(self, host: str, port: int, tls: bool, ca_file: str = ""):
        self.host, self.port, self.tls, self.ca_file = host, port, tls, ca_file
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        if self.tls:
            context = ssl.create_default_context(cafile=self.ca_file or None)
            sock = context.wrap_socket(sock, server_hostname=self.host)
        return sock

    def send(self, lines: list[bytes]) -> None:
        if self.sock is None:
            self.sock = self._connect()
        try:
            self.sock.sendall(b"".join(syslog_frame(line) for line in lines))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


def sink_for(target: str):
    if target.startswith("file:"):
        return FileSink(target[len("file:"):])
    parts = urlsplit(target)
    if parts.scheme in ("syslog+tcp", "syslog+tls") and parts.hostname and parts.port:
        return SyslogSink(parts.hostname, parts.port, parts.scheme == "syslog+tls",
                          getattr(settings, "DELEGATE_AUDIT_STREAM_TLS_CA", ""))
    raise ValueError(f"DELEGATE_AUDIT_STREAM={target!r}: use file:/path, syslog+tcp://host:port,"
                     " syslog+tls://host:port or off")


def configured_target() -> str:
    target = (getattr(settings, "DELEGATE_AUDIT_STREAM", "") or "").strip()
    return "" if target.lower() in ("", "off", "none") else target


#
# The sender
#

@dataclass
class _Gap:
    first: int
    last: int
    reason: str

    def widen(self, sequence: int) -> None:
        self.first, self.last = min(self.first, sequence), max(self.last, sequence)


@dataclass
class _Sender:
    """One per process: a bounded queue of (target, sequence, line) and the thread that drains it."""

    pid: int = field(default_factory=os.getpid)
    items: queue.Queue = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gaps: dict = field(default_factory=dict)  # target -> _Gap still to recover
    sinks: dict = field(default_factory=dict)
    busy: bool = False
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="audit-stream", daemon=True)
        self.thread.start()

    def offer(self, target: str, sequence: int, line: bytes) -> None:
        """Never blocks: a full queue turns the line into a gap to recover from the database."""
        limit = max(1, int(getattr(settings, "DELEGATE_AUDIT_STREAM_QUEUE_SIZE", 10000)))
        if self.items.qsize() >= limit:
            self._note_gap(target, sequence, "queue full")
            return
        self.items.put((target, sequence, line))

    def _note_gap(self, target: str, sequence: int, reason: str) -> None:
        from automations.ops import metrics

        metrics.AUDIT_STREAM.labels(outcome="dropped").inc()
        with self.lock:
            gap = self.gaps.get(target)
            if gap is None:
                self.gaps[target] = _Gap(sequence, sequence, reason)
                log.warning("audit.stream_gap", target=_redacted(target), first_sequence=sequence, reason=reason)
            else:
                gap.widen(sequence)

    def _sink(self, target: str):
        if target not in self.sinks:
            self.sinks[target] = sink_for(target)
        return self.sinks[target]

    def _deliver(self, target: str, lines: list[bytes]) -> None:
        """Send, retrying with backoff until the destination takes it; meanwhile new lines overflow into gaps."""
        from automations.ops import metrics

        delay = 0.1
        while True:
            try:
                self._sink(target).send(lines)
                metrics.AUDIT_STREAM.labels(outcome="sent").inc(len(lines))
                return
            except (OSError, ValueError) as error:
                metrics.AUDIT_STREAM.labels(outcome="error").inc()
                log.warning("audit.stream_unavailable", target=_redacted(target), error=str(error)[:200],
                            retry_in=delay)
                if isinstance(error, ValueError):
                    return  # a misconfigured target: nothing will ever take it (logged)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _recover(self) -> None:
        """Re-send gaps from the database by sequence, once the queue is empty."""
        from django.db import connection

        from automations.ops import metrics
        from automations.models import AuditEvent

        with self.lock:
            pending, self.gaps = self.gaps, {}
        try:
            for target, gap in pending.items():
                self._deliver(target, [gap_line(gap.first, gap.last, gap.reason)])
                after = gap.first - 1
                while after < gap.last:
                    batch = list(AuditEvent.objects.filter(sequence__gt=after, sequence__lte=gap.last)
                                 .order_by("sequence")[:500])
                    if not batch:
                        break
                    self._deliver(target, [line_for(event) for event in batch])
                    metrics.AUDIT_STREAM.labels(outcome="recovered").inc(len(batch))
                    after = batch[-1].sequence
                log.info("audit.stream_gap_recovered", target=_redacted(target), first_sequence=gap.first,
                         last_sequence=gap.last)
        finally:
            connection.close()  # this thread's own connection; never hold one between gaps

    def _run(self) -> None:
        while True:
            try:
                target, sequence, line = self.items.get(timeout=0.2)
            except queue.Empty:
                if self.gaps:
                    self.busy = True
                    try:
                        self._recover()
                    except Exception as error:  # noqa: BLE001 - the sender must survive; the gap is re-noted
                        log.error("audit.stream_recovery_failed", error=str(error)[:200])
                    finally:
                        self.busy = False
                continue
            self.busy = True
            count = 1
            try:
                batch = [line]
                while count < 200:  # send what is already queued for the same target in one write
                    try:
                        next_target, _, next_line = self.items.get_nowait()
                    except queue.Empty:
                        break
                    count += 1
                    if next_target != target:
                        self._deliver(target, batch)
                        target, batch = next_target, []
                    batch.append(next_line)
                self._deliver(target, batch)
            except Exception as error:  # noqa: BLE001
                log.error("audit.stream_send_failed", error=str(error)[:200])
                self._note_gap(target, sequence, "send failed")
            finally:
                for _ in range(count):
                    self.items.task_done()
                self.busy = False

    def idle(self) -> bool:
        return self.items.unfinished_tasks == 0 and not self.gaps and not self.busy


_sender: _Sender | None = None
_sender_lock = threading.Lock()


def _current() -> _Sender:
    """This process's sender (a forked worker child starts its own)."""
    global _sender
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid():
            _sender = _Sender()
            _sender.start()
        return _sender


def _redacted(target: str) -> str:
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}" if parts.hostname else target


def publish_on_commit(event) -> None:
    """Called by audit.record() inside the writing transaction: stream the event if and when it commits."""
    target = configured_target()
    if not target:
        return
    line = line_for(event)
    sequence = event.sequence
    transaction.on_commit(lambda: _current().offer(target, sequence, line), robust=True)


def flush(timeout: float = 10.0) -> bool:
    """Wait until everything offered so far was sent (tests, and process exit). True when drained."""
    if _sender is None or _sender.pid != os.getpid():
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _sender.idle():
            return True
        time.sleep(0.02)
    return _sender.idle()


atexit.register(flush, 5.0)


#
# Comparing the stream with the database (verify_audit --against)
#

@dataclass
class Comparison:
    problems: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: str = ""


def _ranges(sequences: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for sequence in sorted(sequences):
        if ranges and sequence == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], sequence)
        else:
            ranges.append((sequence, sequence))
    return ranges


def read_stream(path: Path) -> tuple[dict[int, tuple[str, str, dict]], list[dict], list]:
    """(sequence -> (prev_hash, hash, event), gap notices, problems) from a stream file or collected syslog."""
    from automations import audit

    events: dict[int, tuple[str, str, dict]] = {}
    gaps, problems = [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                record = json.loads(text[text.index("{"):])
            except ValueError:
                problems.append(audit.ChainProblem(0, f"line {number} of {path.name} is not a stream record"))
                continue
            if "gap" in record:
                gaps.append(record["gap"])
                continue
            sequence, event = record.get("sequence"), record.get("event") or {}
            if not isinstance(sequence, int) or event.get("sequence") != sequence:
                problems.append(audit.ChainProblem(sequence or 0, f"line {number} of {path.name} is malformed"))
                continue
            if audit.compute_hash(record.get("prev_hash", ""), event) != record.get("hash"):
                problems.append(audit.ChainProblem(sequence, f"event {sequence} in the stream ({path.name} line"
                                                             f" {number}) does not match its hash"))
                continue
            previous = events.get(sequence)
            if previous and previous[1] != record["hash"]:
                problems.append(audit.ChainProblem(sequence, f"the stream holds two different events {sequence}"))
            events[sequence] = (record["prev_hash"], record["hash"], event)
    return events, gaps, problems


def compare(path: Path, *, manifests: list[dict] = (), start: int | None = None, end: int | None = None) -> Comparison:
    """Events missing from the database, missing from the stream, or different, in [start, end]."""
    from automations import audit

    result = Comparison()
    streamed, gaps, result.problems = read_stream(path)

    def in_range(sequence: int) -> bool:
        return (start is None or sequence >= start) and (end is None or sequence <= end)

    streamed = {sequence: value for sequence, value in streamed.items() if in_range(sequence)}
    archived = [(one["first_sequence"], one["last_sequence"]) for one in manifests]
    seen_in_db: set[int] = set()
    missing_from_stream: list[int] = []
    matched = 0
    for fields, prev_hash, stored_hash in audit.chain_rows(start, end):
        sequence = fields["sequence"]
        seen_in_db.add(sequence)
        entry = streamed.get(sequence)
        if entry is None:
            missing_from_stream.append(sequence)
        elif entry[1] != stored_hash or (entry[0], entry[1]) != (prev_hash, audit.compute_hash(prev_hash, fields)):
            result.problems.append(audit.ChainProblem(sequence, f"event {sequence} differs between the database and"
                                                                " the stream (edited in one of them)"))
        else:
            matched += 1
    missing_from_db = [sequence for sequence in streamed if sequence not in seen_in_db
                       and not any(first <= sequence <= last for first, last in archived)]
    for first, last in _ranges(missing_from_db):
        result.problems.append(audit.ChainProblem(first, f"events {first}..{last} are in the external stream but"
                                                         " missing from the database (deleted)"))
    for first, last in _ranges(missing_from_stream):
        result.problems.append(audit.ChainProblem(first, f"events {first}..{last} are missing from the stream"
                                                         " (not delivered yet, lost, or removed from the stream)"))
    for gap in gaps:
        result.notes.append(f"the stream reported a gap {gap.get('first_sequence')}..{gap.get('last_sequence')}"
                            " (recovered lines follow it)")
    if streamed or seen_in_db:
        low, high = min([*streamed, *seen_in_db]), max([*streamed, *seen_in_db])
        result.summary = f"stream: events {low}..{high} ({matched}) match the database ({path})"
    else:
        result.summary = f"stream: empty, and no events in the database range ({path})"
    return result
