"""Signed archive manifests as evidence: is one valid, and do they cover the events below the oldest stored one.

An archived range leaves the database only under a manifest signed with the audit key
(automations.audit.archive writes them). Both the archive and the digest writer ask the same
question before vouching for the chain, whether signed manifests account for every event below
the oldest stored one (``front_coverage``), so the answer lives here, below both of them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from automations import audit
from automations.audit import signing as audit_signing
from automations.models import AuditArchiveManifest, AuditEvent

FORMAT = "delegate-audit-archive/1"


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
    if not key.verify(audit_signing.signed_bytes(manifest), manifest["signature"]):
        return audit.ChainProblem(first, f"{name} has an invalid signature (forged or altered)")
    if manifest.get("event_count") != last - first + 1 or first < 1 or last < first:
        return audit.ChainProblem(first, f"{name} does not describe a range")
    return None


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
