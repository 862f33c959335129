"""Retention: export a closed range of the audit log with a manifest, so it can leave the database.

Audit rows are append-only: the application never deletes them. Archiving is therefore two
steps (docs/audit.md, "Retention"):

1. ``manage.py archive_audit --through N`` verifies events [oldest, N], writes them as JSON
   Lines (every chained field plus prev_hash and hash, so the file verifies on its own), writes
   a manifest (range, anchor, head hash, file SHA-256, the digests covering the range, signed
   with the digest key) and appends an ``audit.archived`` event to the chain recording all that.
2. After the files are on write-once storage, a DBA deletes the range out of band, as the
   table owner, with the SQL the command prints. verify_audit then starts at the new oldest
   event and takes its anchor from the ``audit.archived`` event (or from ``--archive MANIFEST``).
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
from automations.audit.guards import TABLE
from automations.canonical import canonical_json
from automations.models import AuditEvent

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


def verify_archive(manifest_path: Path, signer: audit_digests.Signer | list | None = None) -> audit.ChainReport:
    """Check an archive on its own: manifest signature, file hash, and the chain inside the file."""
    manifest = json.loads(manifest_path.read_bytes())
    if manifest.get("format") != FORMAT:
        raise ArchiveError(f"{manifest_path} is not a Delegate audit archive manifest.")
    trusted = {one.key_id: one for one in (signer if isinstance(signer, list) else [signer] if signer else [])}
    if trusted and manifest.get("signature"):
        key = trusted.get(manifest.get("key_id"))
        if key is None or not key.verify(audit_digests.signed_bytes(manifest), manifest["signature"]):
            return audit.ChainReport(problem=audit.ChainProblem(manifest["first_sequence"],
                                                                "the archive manifest's signature is invalid"))
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


def archive(*, through: int, out_dir: Path, signer: audit_digests.Signer | None = None) -> Archive:
    """Export [oldest event, through] and record the archive in the chain. Deletes nothing."""
    first = AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True).first()
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    if first is None or through < first:
        raise ArchiveError("Nothing to archive: the range is empty.")
    if through >= head:
        raise ArchiveError(f"Archive a closed range: --through must be below the newest event ({head}).")
    anchor = audit.GENESIS_HASH if first == 1 else audit.archived_anchor(first)
    if anchor is None:
        raise ArchiveError(f"Events before {first} are gone and no audit.archived event anchors them.")
    covering: list[dict] = []
    if signer is not None:
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
        "anchor_prev_hash": anchor, "last_hash": report.last_hash, "file": data_path.name, "sha256": sha256,
        "bytes": size, "created_at": timezone.now(), "created_by": getpass.getuser(), "digests": covering,
    }
    manifest = json.loads(canonical_json(manifest))
    if signer is not None:
        manifest.update(algorithm=signer.algorithm, key_id=signer.key_id)
        manifest["signature"] = signer.sign(audit_digests.signed_bytes(manifest))
    with manifest_path.open("xb") as handle:
        handle.write(json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n")
    written = verify_archive(manifest_path, signer)
    if written.problem:
        raise ArchiveError(f"The written archive does not verify: {written.problem.reason}")
    with transaction.atomic():
        event = audit.record(action="audit.archived", actor=None, actor_name="system:archive_audit", details={
            "first_sequence": first, "last_sequence": through, "event_count": manifest["event_count"],
            "anchor_prev_hash": anchor, "last_hash": report.last_hash, "file": data_path.name, "sha256": sha256,
            "manifest": manifest_path.name, "manifest_sha256": file_sha256(manifest_path)[0],
        })
    return Archive(manifest_path=manifest_path, manifest=manifest, event=event)
