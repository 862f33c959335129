"""Catalog sync: mirror the Automation runbooks SSM offers, through the read-only session.

Document metadata is synced for every runbook (Owned by me, Shared with me, Amazon); content
and parameter schemas only for versions not seen before of runbooks an admin offers to some
team (SSM document versions never change once created). A document that disappears is marked
unavailable, never deleted: requests and audit events point at it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from django.db import transaction
from django.utils import timezone

from automations import audit, aws
from automations.models import Account, Runbook, RunbookVersion
from automations.runbooks import (
    UnsupportedRunbook,
    content_hash,
    load_document,
    parse_parameters,
    pattern_problems,
    step_summary,
)

log = structlog.get_logger(__name__)
OWNER_FILTERS = (("Self", Runbook.Owner.SELF), ("Private", Runbook.Owner.PRIVATE), ("Amazon", Runbook.Owner.AMAZON))


@dataclass
class SyncReport:
    documents: int = 0
    new_versions: int = 0
    unavailable: int = 0
    errors: list[str] = field(default_factory=list)


def runbook_catalog_sync(*, actor=None, accounts=None, only_offered: bool = True) -> SyncReport:
    """Sync every account and region; returns what changed. Safe to run repeatedly."""
    report = SyncReport()
    for account in accounts if accounts is not None else Account.objects.all():
        for region in account.regions:
            try:
                _sync_region(account, region, report, only_offered=only_offered)
            except aws.AwsError as error:
                report.errors.append(f"{account.account_id}/{region}: {error}")
                log.warning("catalog.sync_failed", account_id=account.account_id, region=region, error=str(error))
    with transaction.atomic():
        audit.record(action="catalog.synced", actor=actor, details={
            "documents": report.documents, "new_versions": report.new_versions,
            "unavailable": report.unavailable, "errors": report.errors[:20],
        })
    return report


def _sync_region(account: Account, region: str, report: SyncReport, *, only_offered: bool) -> None:
    role = account.dispatch_role_arn
    seen: set[str] = set()
    for owner_filter, owner_kind in OWNER_FILTERS:
        for doc in aws.list_automation_documents(region=region, role_arn=role, owner=owner_filter):
            name = doc["Name"]
            if owner_kind == Runbook.Owner.PRIVATE and not name.startswith("arn:"):
                # Shared documents must be addressed by ARN (aws-api.md §15.5).
                name = f"arn:aws:ssm:{region}:{doc.get('Owner', '')}:document/{name}"
            if name in seen:
                continue
            seen.add(name)
            report.documents += 1
            Runbook.objects.update_or_create(
                account=account, region=region, name=name,
                defaults={
                    "owner": doc.get("Owner", ""), "owner_kind": owner_kind,
                    "display_name": doc.get("DisplayName", "") or "",
                    "default_version": doc.get("DocumentVersion", "") or "",
                    "available": True, "synced_at": timezone.now(),
                },
            )
    report.unavailable += Runbook.objects.filter(account=account, region=region, available=True).exclude(
        name__in=seen).update(available=False, synced_at=timezone.now())
    runbooks = Runbook.objects.filter(account=account, region=region, available=True)
    if only_offered:
        runbooks = runbooks.filter(team_policies__isnull=False).distinct()
    for runbook in runbooks:
        _sync_versions(runbook, role, report)


def _sync_versions(runbook: Runbook, role: str, report: SyncReport) -> None:
    known = set(runbook.versions.values_list("version", flat=True))
    versions = aws.list_document_versions(region=runbook.region, role_arn=role, name=runbook.name)
    latest = max((int(v["DocumentVersion"]) for v in versions if str(v["DocumentVersion"]).isdigit()), default=0)
    default = next((v["DocumentVersion"] for v in versions if v.get("IsDefaultVersion")), runbook.default_version)
    for info in versions:
        number = str(info["DocumentVersion"])
        if number in known:
            continue
        doc = aws.get_document(region=runbook.region, role_arn=role, name=runbook.name, version=number)
        content, document_format = doc["Content"], doc.get("DocumentFormat", "JSON")
        try:
            document = load_document(content, document_format)
            schema = parse_parameters(document)
            problems = pattern_problems(schema)
            steps = step_summary(document)
            description = str(document.get("description", ""))
        except UnsupportedRunbook as error:
            schema, steps, description, problems = {}, [], "", [str(error)]
        RunbookVersion.objects.create(
            runbook=runbook, version=number, content=content, document_format=document_format,
            content_hash=content_hash(content), description=description, parameters=schema, steps=steps,
            problems=problems,
        )
        report.new_versions += 1
    default_version = runbook.versions.filter(version=default).first()
    Runbook.objects.filter(pk=runbook.pk).update(
        default_version=default, latest_version=str(latest) if latest else default,
        description=default_version.description if default_version else runbook.description,
    )
