"""Signed digests of the audit chain, written outside the database (CloudTrail's digest files in miniature).

The hash chain alone shows that rows were edited, deleted or reordered, but not that the
newest rows were deleted, nor that someone with write access recomputed every hash after an
edit (the chain is unkeyed). So from time to time (Celery beat, DELEGATE_AUDIT_DIGEST_SECONDS)
a digest file pins the chain's head: its sequence and hash, signed with a key the database
does not hold (DELEGATE_AUDIT_DIGEST_KEY), and chained to the previous digest's signature
so that a deleted digest file is noticed too. Point DELEGATE_AUDIT_DIGEST_DIR at storage the
database host cannot rewrite (a separate log host, or a directory synced to S3 Object Lock).

Before signing, the writer re-verifies the chain from the previous digest's head to the new
head, so a digest never launders tampering that happened since the last one. The keys and
what is signed live in automations.audit.signing (key formats: docs/audit.md).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from automations import audit, locks
from automations.audit import manifests as audit_manifests
from automations.audit.signing import DigestError, Signer, configured_signer, signed_bytes, trusted_signers
from automations.canonical import canonical_json
from automations.models import AuditDigest, AuditEvent

log = structlog.get_logger(__name__)

FORMAT = "delegate-audit-digest/1"
PREFIX = "delegate-audit-digest-"


#
# Files
#

def digest_dir() -> Path:
    return Path(settings.DELEGATE_AUDIT_DIGEST_DIR)


def _number(path: Path) -> int:
    return int(path.stem[len(PREFIX):])


def list_digests(directory: Path | None = None) -> list[Path]:
    """Every digest file, oldest first (YYYY/MM/DD/delegate-audit-digest-NNNNNNNNN.json)."""
    directory = directory or digest_dir()
    if not directory.exists():
        return []
    return sorted(directory.rglob(f"{PREFIX}*.json"), key=_number)


def _latest(directory: Path) -> Path | None:
    """The newest digest, looking only into the newest day directory that has one."""
    if not directory.exists():
        return None
    days = sorted((p for p in directory.glob("*/*/*") if p.is_dir()), reverse=True)
    for day in days:
        files = sorted(day.glob(f"{PREFIX}*.json"), key=_number)
        if files:
            return files[-1]
    return None


def load(path: Path) -> dict:
    return json.loads(path.read_bytes())


#
# Writing
#

def write_digest(*, signer: Signer | None = None, directory: Path | None = None, force: bool = False) -> Path | None:
    """Pin the current head in a new signed digest file; None when nothing happened since the last one."""
    signer = signer or configured_signer()
    if signer is None:
        raise DigestError("DELEGATE_AUDIT_DIGEST_KEY is not set; no digest written.")
    directory = directory or digest_dir()
    with transaction.atomic():
        locks.hold_for_transaction(locks.AUDIT_DIGEST)
        previous_path = _latest(directory)
        previous = load(previous_path) if previous_path else None
        head = AuditEvent.objects.order_by("-sequence").values("sequence", "hash", "occurred_at").first()
        last_pinned = previous["last_sequence"] if previous else 0
        if head is None and previous is None:
            return None
        if head is None or head["sequence"] < last_pinned:
            raise DigestError(f"The audit log's head ({head['sequence'] if head else 'empty'}) is behind the last"
                              f" digest ({last_pinned}): newest events were deleted. Run verify_audit.")
        if head["sequence"] == last_pinned and not force:
            return None
        # Never vouch for a front cut: events below the oldest stored one must be under signed manifests.
        oldest = AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True).first()
        coverage = audit_manifests.front_coverage(oldest, trusted_signers([signer]))
        if coverage.anchor is None:
            raise DigestError(f"Refusing to sign: {coverage.problems[-1].reason}. Run verify_audit.")
        # Re-check what was appended since the last digest before vouching for it.
        if previous and last_pinned >= oldest:
            start, anchor = last_pinned + 1, previous["last_hash"]
        else:  # the first digest (or the first after a purge) vouches for everything still in the database
            start, anchor = oldest, coverage.anchor
        report = audit.check_chain(start=start, end=head["sequence"], anchor_hash=anchor)
        if report.problem:
            raise DigestError(f"Refusing to sign: sequence {report.problem.sequence}: {report.problem.reason}")
        now = timezone.now()
        number = (previous["number"] + 1) if previous else 1
        recorded = AuditDigest.objects.order_by("-number").values_list("number", flat=True).first() or 0
        if recorded >= number:
            raise DigestError(f"Digest {recorded} is recorded in the database but its file is not in {directory}:"
                              " newest digest files were removed, or this is not the directory digests were written"
                              " to. Run verify_audit.")
        digest = {
            "format": FORMAT,
            "number": number,
            "created_at": now,
            "first_sequence": last_pinned + 1,
            "last_sequence": head["sequence"],
            "last_hash": head["hash"],
            "last_occurred_at": head["occurred_at"],
            "previous_file": str(previous_path.relative_to(directory)) if previous_path else None,
            "previous_signature": previous["signature"] if previous else None,
            "algorithm": signer.algorithm,
            "key_id": signer.key_id,
        }
        digest = json.loads(canonical_json(digest))
        digest["signature"] = signer.sign(signed_bytes(digest))
        path = directory / now.strftime("%Y/%m/%d") / f"{PREFIX}{number:09d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: a digest file is written once and never replaced.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        with os.fdopen(fd, "wb") as handle:
            handle.write(json.dumps(digest, indent=1, sort_keys=True).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        # A copy in the (append-only) database: removing the newest digest files is then visible.
        AuditDigest.objects.create(number=number, last_sequence=head["sequence"],
                                   document=json.dumps(digest, sort_keys=True))
    log.info("audit.digest_written", number=number, last_sequence=head["sequence"], path=str(path))
    return path


def write_digest_if_configured() -> int:
    """The beat task's body: 0 when no key is set (logged) or nothing is new, else the digest number."""
    signer = configured_signer()
    if signer is None:
        log.warning("audit.digest_skipped", reason="DELEGATE_AUDIT_DIGEST_KEY is not set")
        return 0
    path = write_digest(signer=signer)
    return _number(path) if path else 0


#
# Verification
#

@dataclass
class DigestReport:
    problem: audit.ChainProblem | None = None
    digests: int = 0
    last_pinned: int = 0
    notes: list[str] = field(default_factory=list)
    problems: list = field(default_factory=list)


def verify_digests(*, signer: Signer | list[Signer], directory: Path | None = None, start: int | None = None,
                   end: int | None = None, manifests: list[dict] | None = None) -> DigestReport:
    """Check every digest's signature and linkage, and the events each one pins.

    `signer` may be several trusted keys (after a key rotation, the old public key and the new
    key). A pinned head must still be stored with the signed hash, or lie in a range that a
    valid signed archive manifest (`manifests`, from audit_manifests.front_coverage) accounts for.
    """
    trusted = {one.key_id: one for one in (signer if isinstance(signer, list) else [signer])}
    directory = directory or digest_dir()
    report = DigestReport()
    problems: list[audit.ChainProblem] = []
    previous, previous_path = None, None
    pinned: list[tuple[int, str, dict]] = []
    for path in list_digests(directory):
        name = str(path.relative_to(directory))
        try:
            digest = load(path)
            number, first, last = digest["number"], digest["first_sequence"], digest["last_sequence"]
        except (ValueError, KeyError, OSError) as error:
            problems.append(audit.ChainProblem((previous or {}).get("last_sequence", 0) + 1,
                                               f"digest file {name} is unreadable ({type(error).__name__})"))
            break
        report.digests += 1
        where = f"digest {number} ({name})"
        key = trusted.get(digest.get("key_id"))
        if key is None:
            problems.append(audit.ChainProblem(first, f"{where} was signed with key {digest.get('key_id')}, which is"
                                                      f" not a trusted key (trusted: {', '.join(trusted)})"))
            break
        if not key.verify(signed_bytes(digest), digest.get("signature", "")):
            problems.append(audit.ChainProblem(first, f"{where} has an invalid signature (the file was altered)"))
            break
        if previous is not None:
            if number != previous["number"] + 1:
                problems.append(audit.ChainProblem(previous["last_sequence"] + 1,
                                                   f"digest {previous['number'] + 1} is missing before {where}"))
                break
            if digest.get("previous_signature") != previous["signature"] or first != previous["last_sequence"] + 1:
                problems.append(audit.ChainProblem(first, f"{where} does not follow digest {previous['number']}"
                                                          f" ({previous_path})"))
                break
        elif digest.get("previous_signature") is not None and number != 1:
            report.notes.append(f"the oldest digest on file is {where}; earlier digest files are not present")
        pinned.append((last, digest["last_hash"], {"number": number, "first": first, "created_at": digest["created_at"]}))
        previous, previous_path = digest, name
    if previous is not None:
        report.last_pinned = previous["last_sequence"]

    # The database keeps a copy of every digest written: a newer one than the files means files were removed.
    newest_copy = AuditDigest.objects.order_by("-number").values_list("number", "last_sequence").first()
    if not problems and newest_copy and newest_copy[0] > (previous["number"] if previous else 0):
        problems.append(audit.ChainProblem(
            (previous["last_sequence"] if previous else 0) + 1,
            f"digest {newest_copy[0]} (pinning events through {newest_copy[1]}) is recorded in the database but its"
            f" file is missing from {directory}: the newest digest files were removed"))

    if not problems:
        problems += _heads_below(start, [(seq, expected, info) for seq, expected, info in pinned
                                         if start is not None and seq < start], manifests or [])
    in_range = [(seq, expected, info) for seq, expected, info in pinned
                if (start is None or seq >= start) and (end is None or seq <= end)]
    db_max = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
    for offset in range(0, len(in_range), 1000):
        if problems:
            break
        chunk = in_range[offset:offset + 1000]
        stored = dict(AuditEvent.objects.filter(sequence__in=[seq for seq, _, _ in chunk])
                      .values_list("sequence", "hash"))
        for seq, expected, info in chunk:
            if seq not in stored:
                if seq > db_max:
                    problems.append(audit.ChainProblem(
                        db_max + 1, f"events {db_max + 1}..{seq} were signed in digest {info['number']}"
                                    f" ({info['created_at']}) but are missing: the newest events were deleted"))
                else:
                    problems.append(audit.ChainProblem(seq, f"event {seq}, pinned by digest {info['number']}, is missing"))
                break
            if stored[seq] != expected:
                problems.append(audit.ChainProblem(
                    seq, f"event {seq}'s hash differs from digest {info['number']}: the chain was rewritten"
                         f" between events {info['first']} and {seq}"))
                break
    if problems:
        report.problem = min(problems, key=lambda problem: problem.sequence)
        report.problems = problems
    return report


def _heads_below(start: int | None, heads: list[tuple[int, str, dict]], manifests: list[dict]) -> list[audit.ChainProblem]:
    """Heads pinned below the oldest stored event: each must be accounted for by a valid signed manifest."""
    problems = []
    covered_through = 0  # manifests chain from event 1 through this one
    for manifest in sorted(manifests, key=lambda one: one["first_sequence"]):
        if manifest["first_sequence"] <= covered_through + 1:
            covered_through = max(covered_through, manifest["last_sequence"])
    for seq, expected, info in heads:
        hashes = [manifest["last_hash"] for manifest in manifests if manifest["last_sequence"] == seq]
        hashes += [entry["last_hash"] for manifest in manifests if manifest["first_sequence"] <= seq
                   <= manifest["last_sequence"] for entry in manifest.get("digests", [])
                   if entry.get("number") == info["number"] and entry.get("last_sequence") == seq]
        if not hashes:
            first_missing = covered_through + 1 if covered_through < seq else seq
            problems.append(audit.ChainProblem(
                first_missing, f"events {first_missing}..{seq}, pinned by digest {info['number']}"
                               f" ({info['created_at']}), are neither stored nor covered by a signed archive manifest"))
        elif expected not in hashes:
            problems.append(audit.ChainProblem(seq, f"event {seq}'s hash in digest {info['number']} differs from the"
                                                    " signed archive manifest that covers it"))
    return problems
