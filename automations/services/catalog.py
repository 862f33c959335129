"""Catalog sync: mirror the Automation runbooks SSM offers, through the read-only session.

Document metadata is synced for every runbook (Owner=Self, Private, Amazon); content
and parameter schemas only for versions not seen before of runbooks an admin offers to some
team (the Amazon list is long, so a re-sync costs one ListDocumentVersions per offered runbook
and a DescribeDocument + GetDocument per *new* version).

A version number does not name one content for ever: a document deleted and re-created under
the same name starts again at version 1 with whatever content its new owner wrote. Each version's
CreatedDate (from ListDocumentVersions) is kept; when it moves, the version's SSM hash is read
again (DescribeDocument of that exact version) and a changed hash is recorded as a new content
revision (ContentRevision), audited as `catalog.content_changed`. Requests bound to the old
hash then refuse to start (services/dispatch.py).
A document that disappears is marked unavailable and a version that disappears is marked not
offered, never deleted: requests and audit events point at them. Runs as a periodic task
(automations.sync_runbook_catalog), `manage.py sync_runbooks` and the admin's sync button.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from django.db import transaction
from django.utils import timezone

from automations import audit, aws
from automations.models import Account, ContentRevision, Runbook, RunbookVersion
from automations.runbooks import (
    UnsupportedRunbook,
    category_of,
    content_hash,
    identity_of,
    load_document,
    parse_parameters,
    pattern_problems,
    step_summary,
)

log = structlog.get_logger(__name__)
OWNER_FILTERS = (
    ("Self", Runbook.Owner.SELF),
    ("Private", Runbook.Owner.PRIVATE),
    ("Amazon", Runbook.Owner.AMAZON),
)
VERSION_GONE = "This version no longer exists in SSM."
_REPORTED_NAMES = 50  # names listed in the audit event; the counts are always complete


@dataclass
class SyncReport:
    documents: int = 0
    new_versions: int = 0
    content_changes: int = 0
    unavailable: int = 0
    fetched: int = 0  # GetDocument calls: a re-sync with nothing new makes none
    changes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_details(self) -> dict:
        return {
            "documents": self.documents,
            "new_versions": self.new_versions,
            "content_changes": self.content_changes,
            "unavailable": self.unavailable,
            "fetched": self.fetched,
            "changes": self.changes[:_REPORTED_NAMES],
            "errors": self.errors[:20],
        }


def runbook_catalog_sync(*, actor=None, accounts=None, only_offered: bool = True) -> SyncReport:
    """Sync every account and region; returns what changed. Safe to run repeatedly and concurrently."""
    report = SyncReport()
    for account in accounts if accounts is not None else Account.objects.all():
        for region in account.regions:
            try:
                _sync_region(account, region, report, only_offered=only_offered)
            except aws.AwsError as error:
                report.errors.append(f"{account.account_id}/{region}: {error.code}")
                log.warning(
                    "catalog.sync_failed", account_id=account.account_id, region=region, error=error.code
                )
    with transaction.atomic():
        audit.record(action="catalog.synced", actor=actor, details=report.as_details())
    return report


def runbook_sync(*, runbook: Runbook, actor=None) -> SyncReport:
    """Fetch the versions of one runbook now (e.g. right after an admin offers it to a team)."""
    report = SyncReport()
    try:
        _sync_versions(runbook, runbook.account.dispatch_role_arn, report, tags=None)
    except aws.AwsError as error:
        report.errors.append(f"{runbook.name}: {error.code}")
    with transaction.atomic():
        audit.record(
            action="catalog.synced", actor=actor, details={**report.as_details(), "runbook": runbook.name}
        )
    return report


def _sync_region(account: Account, region: str, report: SyncReport, *, only_offered: bool) -> None:
    role = account.dispatch_role_arn
    seen: set[str] = set()
    tags: dict[str, dict] = {}
    for owner_filter, owner_kind in OWNER_FILTERS:
        for doc in aws.list_automation_documents(region=region, role_arn=role, owner=owner_filter):
            name = str(doc["Name"])
            if owner_kind == Runbook.Owner.PRIVATE and not name.startswith("arn:"):
                # Shared documents must be addressed by ARN (aws-api.md §15.5).
                name = f"arn:aws:ssm:{region}:{doc.get('Owner', '')}:document/{name}"
            if name in seen:
                continue
            seen.add(name)
            tags[name] = {t.get("Key", ""): t.get("Value", "") for t in doc.get("Tags") or []}
            report.documents += 1
            Runbook.objects.update_or_create(
                account=account,
                region=region,
                name=name,
                defaults={
                    "owner": str(doc.get("Owner", ""))[:64],
                    "owner_kind": owner_kind,
                    "display_name": str(doc.get("DisplayName", "") or "")[:1024],
                    "default_version": str(doc.get("DocumentVersion", "") or "")[:16],
                    "available": True,
                    "synced_at": timezone.now(),
                },
            )
    # Only after all three listings succeeded: a failed listing must not mark everything unavailable.
    gone = Runbook.objects.filter(account=account, region=region, available=True).exclude(name__in=seen)
    names = list(gone.values_list("name", flat=True))
    report.unavailable += gone.update(available=False, synced_at=timezone.now())
    report.changes.extend(f"unavailable: {name}" for name in names)
    runbooks = Runbook.objects.filter(account=account, region=region, available=True)
    if only_offered:
        runbooks = runbooks.filter(team_policies__isnull=False).distinct()
    for runbook in runbooks:
        try:
            _sync_versions(runbook, role, report, tags=tags.get(runbook.name))
        except aws.AwsError as error:  # one broken document must not stop the rest
            report.errors.append(f"{runbook.name}: {error.code}")
            log.warning("catalog.runbook_sync_failed", runbook=runbook.name, error=error.code)


def _created(listed: dict) -> str:
    value = listed.get("CreatedDate")
    return value.isoformat() if hasattr(value, "isoformat") else str(value or "")


def _sync_versions(runbook: Runbook, role: str, report: SyncReport, *, tags: dict | None) -> None:
    versions = aws.list_document_versions(region=runbook.region, role_arn=role, name=runbook.name)
    listed = {str(v["DocumentVersion"]): v for v in versions}
    known = {v.version: v for v in runbook.versions.only("id", "version", "problems", "ssm_hash", "ssm_created")}
    numbers = [int(n) for n in listed if n.isdigit()]
    latest = str(max(numbers)) if numbers else runbook.latest_version
    default = next(
        (str(v["DocumentVersion"]) for v in versions if v.get("IsDefaultVersion")), runbook.default_version
    )
    new = sorted((n for n in listed if n not in known), key=lambda n: int(n) if n.isdigit() else 0)
    for number in new:
        doc = aws.get_document(region=runbook.region, role_arn=role, name=runbook.name, version=number)
        ssm_hash, hash_type = aws.document_hash(region=runbook.region, role_arn=role, name=runbook.name,
                                                version=number)
        report.fetched += 1
        fields = _version_fields(doc["Content"], doc.get("DocumentFormat", "JSON"))
        with transaction.atomic():
            version, created = RunbookVersion.objects.get_or_create(
                runbook=runbook,
                version=number,
                defaults={**fields, "ssm_hash": ssm_hash, "ssm_hash_type": hash_type,
                          "ssm_created": _created(listed[number])},
            )
            if created:  # a concurrent sync may have stored it a moment ago
                ContentRevision.objects.create(runbook_version=version, number=1, ssm_hash=ssm_hash,
                                               content=fields["content"], document_format=fields["document_format"])
                report.new_versions += 1
                report.changes.append(f"new version: {runbook.name} v{number}")
    for number, version in known.items():
        if number not in listed:
            if VERSION_GONE not in version.problems:
                RunbookVersion.objects.filter(pk=version.pk).update(problems=[*version.problems, VERSION_GONE])
                report.changes.append(f"version gone: {runbook.name} v{number}")
            continue
        created_date = _created(listed[number])
        if version.ssm_hash and version.ssm_created == created_date:
            continue  # the same version SSM listed before: its content cannot have changed
        _recheck_content(runbook, version, role, created_date, report)
    fields = {"default_version": default, "latest_version": latest, "synced_at": timezone.now()}
    # The catalog shows the default version's description and category (re-read: it may have moved).
    default_version = runbook.versions.filter(version=default).first()
    if default_version is not None:
        fields["description"] = default_version.description
        try:
            document = load_document(default_version.content, default_version.document_format)
            fields["category"] = category_of(document, tags, name=runbook.name)
        except UnsupportedRunbook:
            fields["category"] = "General"
    Runbook.objects.filter(pk=runbook.pk).update(**fields)


def _recheck_content(runbook: Runbook, version: RunbookVersion, role: str, created_date: str,
                     report: SyncReport) -> None:
    """The version was re-created (or never described): read its SSM hash; a new hash is a new content."""
    ssm_hash, hash_type = aws.document_hash(region=runbook.region, role_arn=role, name=runbook.name,
                                            version=version.version)
    if ssm_hash == version.ssm_hash or not version.ssm_hash:
        # Same content re-listed, or a version stored before hashes were kept: record the hash only.
        with transaction.atomic():
            RunbookVersion.objects.filter(pk=version.pk).update(ssm_hash=ssm_hash, ssm_hash_type=hash_type,
                                                                ssm_created=created_date)
            if not version.ssm_hash:
                stored = RunbookVersion.objects.get(pk=version.pk)
                ContentRevision.objects.get_or_create(
                    runbook_version=stored, ssm_hash=ssm_hash,
                    defaults={"number": stored.revision, "content": stored.content,
                              "document_format": stored.document_format})
        return
    record_content_revision(runbook=runbook, version=version, role=role, ssm_hash=ssm_hash, hash_type=hash_type,
                            created_date=created_date)
    report.content_changes += 1
    report.fetched += 1
    report.changes.append(f"content changed: {runbook.name} v{version.version}")


def record_content_revision(*, runbook: Runbook, version: RunbookVersion, role: str, ssm_hash: str,
                            hash_type: str, created_date: str = "", actor=None) -> RunbookVersion:
    """SSM serves other content under a version we store: fetch it, keep the old one as a revision,
    make the new one current (what forms and approvers see from now on) and audit it."""
    doc = aws.get_document(region=runbook.region, role_arn=role, name=runbook.name, version=version.version)
    fields = _version_fields(doc["Content"], doc.get("DocumentFormat", "JSON"))
    with transaction.atomic():
        current = RunbookVersion.objects.select_for_update().get(pk=version.pk)
        if current.ssm_hash == ssm_hash:
            return current  # another sync or worker recorded it first
        number = current.revision + 1
        ContentRevision.objects.get_or_create(
            runbook_version=current, ssm_hash=ssm_hash,
            defaults={"number": number, "content": fields["content"], "document_format": fields["document_format"]})
        previous_hash = current.ssm_hash
        RunbookVersion.objects.filter(pk=current.pk).update(
            **fields, ssm_hash=ssm_hash, ssm_hash_type=hash_type, revision=number,
            **({"ssm_created": created_date} if created_date else {}))
        audit.record(action="catalog.content_changed", actor=actor, details={
            "runbook": runbook.name, "version": current.version, "revision": number,
            "previous_hash": previous_hash, "hash": ssm_hash, "hash_type": hash_type,
        }, runbook=runbook.name, account_id=runbook.account.account_id, region=runbook.region)
        log.warning("catalog.content_changed", runbook=runbook.name, version=current.version, revision=number)
    return RunbookVersion.objects.get(pk=version.pk)


def _version_fields(content: str, document_format: str) -> dict:
    """What we store for one version. Content we cannot parse is stored, flagged and not offered."""
    try:
        document = load_document(content, document_format)
        schema = parse_parameters(document)
        problems = pattern_problems(schema)
        steps = step_summary(document)
        description = str(document.get("description", ""))[:20000]
    except UnsupportedRunbook as error:
        schema, steps, description, problems = {}, [], "", [str(error)]
        document = {}
    return {
        "identity": identity_of(document) if document else {},
        "content": content,
        "document_format": str(document_format)[:8],
        "content_hash": content_hash(content),
        "description": description,
        "parameters": schema,
        "steps": steps,
        "problems": problems,
    }
