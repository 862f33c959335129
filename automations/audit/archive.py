"""Retention: export a closed range of the audit log under a signed manifest, so it can leave the database.

Audit rows are append-only: the application never deletes them. Archiving is therefore two
steps (docs/audit.md, "Retention"):

1. ``manage.py archive_audit --through N`` verifies events [oldest, N], writes them as JSON
   Lines (every chained field plus prev_hash and hash, so the file verifies on its own), and a
   manifest (range, count, anchor, first and last hash, file SHA-256, the digests covering the
   range) signed with the digest key. The manifest is also inserted into the append-only
   manifest table, and an ``audit.archived`` event records the archive in the chain.
2. After the files are on write-once storage, a DBA deletes the range out of band, as the
   table owner, with the SQL the command prints.

A gap below the oldest stored event is accepted only where signed manifests cover it exactly
(``front_coverage``): an ``audit.archived`` row proves nothing, since anyone who can INSERT can
write one, and a manifest counts only when its signature verifies with a trusted key.
"""
from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from automations import audit
from automations.audit import digests as audit_digests
from automations.audit.guards import TABLE
from automations.canonical import canonical_json
from automations.models import AuditArchiveManifest, AuditEvent

FORMAT = "delegate-audit-archive/1"


class ArchiveError(Exception):
    pass


@dataclass
class Archive:
    manifest_path: Path
    manifest: dict
    event: AuditEvent

    @property
    def purge_sql(self) -> str:
        first, last = self.manifest["first_sequence"], self.manifest["last_sequence"]
        return (
            "-- Run as the table owner, only after the archive and manifest are on write-once storage.\n"
            "BEGIN;\n"
            f"ALTER TABLE {TABLE} DISABLE TRIGGER audit_event_no_update_delete;\n"
            f"DELETE FROM {TABLE} WHERE sequence BETWEEN {first} AND {last};\n"
            f"ALTER TABLE {TABLE} ENABLE TRIGGER audit_event_no_update_delete;\n"
            "COMMIT;\n"
        )


def export_line(fields: dict, prev_hash: str, stored_hash: str) -> bytes:
    return canonical_json({**fields, "prev_hash": prev_hash, "hash": stored_hash}) + b"\n"


def read_export(path: Path) -> Iterator[tuple[dict, str, str]]:
    """Rows of an archive file in the shape audit.check_chain takes."""
    with path.open("rb") as handle:
        for line in handle:
            row = json.loads(line)
            yield {name: row[name] for name in audit.CHAINED_FIELDS}, row["prev_hash"], row["hash"]


def file_sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def manifest_problem(manifest: dict, signers: list, where: str = "") -> audit.ChainProblem | None:
    """None when the manifest is well formed and signed by a trusted key; else the problem, naming its range."""
    try:
        first, last = int(manifest["first_sequence"]), int(manifest["last_sequence"])
    except (KeyError, TypeError, ValueError):
        return audit.ChainProblem(1, f"an archive manifest{where} is unreadable")
    name = f"the archive manifest for events {first}..{last}{where}"
    if manifest.get("format") != FORMAT:
        return audit.ChainProblem(first, f"{name} is not a Delegate audit archive manifest")
    if not manifest.get("signature"):
        return audit.ChainProblem(first, f"{name} is not signed")
    trusted = {one.key_id: one for one in signers}
    key = trusted.get(manifest.get("key_id"))
    if key is None:
        return audit.ChainProblem(first, f"{name} was signed with key {manifest.get('key_id')}, which is not a trusted"
                                         f" key (trusted: {', '.join(trusted) or 'none'})")
    if not key.verify(audit_digests.signed_bytes(manifest), manifest["signature"]):
        return audit.ChainProblem(first, f"{name} has an invalid signature (forged or altered)")
    if manifest.get("event_count") != last - first + 1 or first < 1 or last < first:
        return audit.ChainProblem(first, f"{name} does not describe a range")
    return None


def verify_archive(manifest_path: Path, signer: audit_digests.Signer | list | None = None) -> audit.ChainReport:
    """Check an archive on its own: manifest signature, file hash, and the chain inside the file."""
    manifest = json.loads(manifest_path.read_bytes())
    signers = signer if isinstance(signer, list) else [signer] if signer else []
    problem = manifest_problem(manifest, signers, f" ({manifest_path.name})")
    if problem:
        return audit.ChainReport(problem=problem)
    data = manifest_path.parent / manifest["file"]
    sha256, _ = file_sha256(data)
    if sha256 != manifest["sha256"]:
        return audit.ChainReport(problem=audit.ChainProblem(manifest["first_sequence"],
                                                            f"{data.name} does not match the manifest's SHA-256"))
    report = audit.check_chain(start=manifest["first_sequence"], anchor_hash=manifest["anchor_prev_hash"],
                               rows=read_export(data))
    if not report.problem and (report.last_sequence, report.last_hash) != (manifest["last_sequence"],
                                                                           manifest["last_hash"]):
        report.problem = audit.ChainProblem((report.last_sequence or manifest["first_sequence"] - 1) + 1,
                                            "the archive file ends before the manifest's last event")
    return report


@dataclass
class Coverage:
    """What the signed manifests say about the events below the oldest stored one."""

    anchor: str | None = None  # hash of event start-1, when manifests cover 1..start-1 exactly
    manifests: list[dict] = field(default_factory=list)  # every valid manifest
    covered_through: int = 0  # manifests chain from event 1 through this one
    problems: list[audit.ChainProblem] = field(default_factory=list)


def stored_manifests() -> list[tuple[dict | None, str]]:
    """(manifest or None if unreadable, where) for every row of the manifest table."""
    found = []
    for pk, document in AuditArchiveManifest.objects.order_by("first_sequence", "pk").values_list("pk", "document"):
        try:
            found.append((json.loads(document), f" (manifest row {pk})"))
        except ValueError:
            found.append((None, f" (manifest row {pk})"))
    return found


def front_coverage(start: int, signers: list, extra: list[Path] = ()) -> Coverage:
    """Do valid signed manifests cover events 1..start-1 exactly, each anchored on the one before?"""
    coverage = Coverage()
    candidates = stored_manifests() + [(json.loads(path.read_bytes()), f" ({path.name})") for path in extra]
    seen = set()
    for manifest, where in candidates:
        problem = manifest_problem(manifest, signers, where) if manifest is not None else \
            audit.ChainProblem(1, f"an archive manifest{where} is unreadable")
        if problem:
            coverage.problems.append(problem)
            continue
        key = (manifest["first_sequence"], manifest["last_sequence"], manifest["signature"])
        if key not in seen:
            seen.add(key)
            coverage.manifests.append(manifest)
    if start <= 1:
        coverage.anchor = audit.GENESIS_HASH
        return coverage
    by_start: dict[tuple[int, str], list[dict]] = {}
    for manifest in coverage.manifests:
        by_start.setdefault((manifest["first_sequence"], manifest["anchor_prev_hash"]), []).append(manifest)
    expected, prev_hash = 1, audit.GENESIS_HASH
    while expected < start:
        # Continue with a manifest that starts here and ends inside the gap (the longest such one).
        options = [one for one in by_start.get((expected, prev_hash), []) if one["last_sequence"] < start]
        if not options:
            break
        chosen = max(options, key=lambda one: one["last_sequence"])
        coverage.covered_through = chosen["last_sequence"]
        expected, prev_hash = chosen["last_sequence"] + 1, chosen["last_hash"]
    if expected == start:
        coverage.anchor = prev_hash
    else:
        coverage.problems.append(audit.ChainProblem(
            expected, f"events {expected}..{start - 1} are missing and no signed archive manifest covers them"))
    return coverage


def manifests_against_stored(manifests: list[dict]) -> list[audit.ChainProblem]:
    """A valid manifest whose range is still (partly) stored must agree with the stored events."""
    problems = []
    for manifest in manifests:
        for sequence, expected in ((manifest["first_sequence"], manifest.get("first_hash")),
                                   (manifest["last_sequence"], manifest["last_hash"])):
            stored = AuditEvent.objects.filter(sequence=sequence).values_list("hash", flat=True).first()
            if stored is not None and expected and stored != expected:
                problems.append(audit.ChainProblem(sequence, f"event {sequence} differs from the signed archive manifest"
                                                             f" for events {manifest['first_sequence']}.."
                                                             f"{manifest['last_sequence']}"))
    return problems


def archive(*, through: int, out_dir: Path, signer: audit_digests.Signer | None = None) -> Archive:
    """Export [oldest event, through] and record the archive in the chain. Deletes nothing."""
    if signer is None:
        raise ArchiveError("Archives are signed: set DELEGATE_AUDIT_DIGEST_KEY (manage.py audit_digest --generate-key).")
    first = AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True).first()
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    if first is None or through < first:
        raise ArchiveError("Nothing to archive: the range is empty.")
    if through >= head:
        raise ArchiveError(f"Archive a closed range: --through must be below the newest event ({head}).")
    coverage = front_coverage(first, audit_digests.trusted_signers([signer]))
    if coverage.anchor is None:
        raise ArchiveError(f"Refusing to archive: {coverage.problems[-1].reason}.")
    anchor = coverage.anchor
    covering: list[dict] = []
    # Pin the range in a signed digest first, so the export can be checked against it.
    if not audit_digests.list_digests() or audit_digests.load(audit_digests.list_digests()[-1])["last_sequence"] < through:
        audit_digests.write_digest(signer=signer)
    for path in audit_digests.list_digests():
        digest = audit_digests.load(path)
        if digest["last_sequence"] >= first:
            covering.append({"file": str(path.relative_to(audit_digests.digest_dir())), "number": digest["number"],
                             "last_sequence": digest["last_sequence"], "last_hash": digest["last_hash"],
                             "signature": digest["signature"]})
        if digest["last_sequence"] >= through:
            break

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"delegate-audit-{first:09d}-{through:09d}"
    data_path, manifest_path = out_dir / f"{stem}.jsonl", out_dir / f"{stem}.manifest.json"
    if data_path.exists() or manifest_path.exists():
        raise ArchiveError(f"{data_path} already exists; archives are never overwritten.")
    report = audit.check_chain(start=first, end=through, anchor_hash=anchor)
    if report.problem:
        raise ArchiveError(f"The range does not verify (sequence {report.problem.sequence}: {report.problem.reason}).")
    with data_path.open("xb") as handle:
        for fields, prev_hash, stored_hash in audit.chain_rows(first, through):
            handle.write(export_line(fields, prev_hash, stored_hash))
    sha256, size = file_sha256(data_path)
    manifest = {
        "format": FORMAT, "first_sequence": first, "last_sequence": through, "event_count": through - first + 1,
        "anchor_prev_hash": anchor, "first_hash": AuditEvent.objects.get(sequence=first).hash,
        "last_hash": report.last_hash, "file": data_path.name, "sha256": sha256, "bytes": size,
        "created_at": timezone.now(), "created_by": getpass.getuser(), "digests": covering,
    }
    manifest = json.loads(canonical_json(manifest))
    manifest.update(algorithm=signer.algorithm, key_id=signer.key_id)
    manifest["signature"] = signer.sign(audit_digests.signed_bytes(manifest))
    with manifest_path.open("xb") as handle:
        handle.write(json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n")
    written = verify_archive(manifest_path, signer)
    if written.problem:
        raise ArchiveError(f"The written archive does not verify: {written.problem.reason}")
    with transaction.atomic():
        AuditArchiveManifest.objects.create(first_sequence=first, last_sequence=through,
                                            document=json.dumps(manifest, sort_keys=True))
        event = audit.record(action="audit.archived", actor=None, actor_name="system:archive_audit", details={
            "first_sequence": first, "last_sequence": through, "event_count": manifest["event_count"],
            "anchor_prev_hash": anchor, "last_hash": report.last_hash, "file": data_path.name, "sha256": sha256,
            "manifest": manifest_path.name, "manifest_sha256": file_sha256(manifest_path)[0],
        })
    return Archive(manifest_path=manifest_path, manifest=manifest, event=event)
