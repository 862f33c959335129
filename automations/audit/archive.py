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
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from automations import audit
from automations.audit import digests as audit_digests
from automations.audit import manifests as audit_manifests
from automations.audit import signing as audit_signing
from automations.audit.guards import TABLE
from automations.audit.manifests import FORMAT
from automations.canonical import canonical_json
from automations.models import AuditArchiveManifest, AuditEvent


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


def verify_archive(manifest_path: Path, signer: audit_signing.Signer | list | None = None) -> audit.ChainReport:
    """Check an archive on its own: manifest signature, file hash, and the chain inside the file."""
    manifest = json.loads(manifest_path.read_bytes())
    signers = signer if isinstance(signer, list) else [signer] if signer else []
    problem = audit_manifests.manifest_problem(manifest, signers, f" ({manifest_path.name})")
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


def archive(*, through: int, out_dir: Path, signer: audit_signing.Signer | None = None) -> Archive:
    """Export [oldest event, through] and record the archive in the chain. Deletes nothing."""
    if signer is None:
        raise ArchiveError("Archives are signed: set DELEGATE_AUDIT_DIGEST_KEY (manage.py audit_digest --generate-key).")
    first = AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True).first()
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    if first is None or through < first:
        raise ArchiveError("Nothing to archive: the range is empty.")
    if through >= head:
        raise ArchiveError(f"Archive a closed range: --through must be below the newest event ({head}).")
    coverage = audit_manifests.front_coverage(first, audit_signing.trusted_signers([signer]))
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
    manifest["signature"] = signer.sign(audit_signing.signed_bytes(manifest))
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
