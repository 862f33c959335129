"""The content check: does SSM still serve, under the request's version, the content it bound?

A request binds the SSM content hash of its version at submit (AutomationRequest.document_hash,
inside the fingerprint). Right before anything acts on that approval (approving it, starting it,
signalling one of its aws:approve steps) the hash of that exact version is read again from SSM
(DescribeDocument with DocumentVersion, never $DEFAULT). A different hash means the document was
replaced (e.g. deleted and re-created under the same name and version number): nothing acts,
the new content is recorded as a catalog revision (so approvers see it), an audit event names
both hashes, and the requester and approvers are told. Reason code: `content_changed`.
"""
from __future__ import annotations

import structlog
from django.db import transaction

from automations import audit, aws
from automations.models import AutomationRequest
from automations.services import notifications

log = structlog.get_logger(__name__)
CONTENT_CHANGED = "content_changed"


def live_hash(request: AutomationRequest) -> tuple[str, str]:
    """(Hash, HashType) SSM reports now for the request's exact document version."""
    return aws.document_hash(region=request.region, role_arn=request.account.dispatch_role_arn,
                             name=request.runbook.name, version=request.runbook_version.version)


def notice_new_content(request: AutomationRequest) -> None:
    """For the approver's page: read the version's SSM hash now; content other than the catalog's is
    recorded as a revision (so the page shows what SSM serves). An AWS failure is not the page's:
    approving checks again (and refuses on a mismatch), and the worker checks before Start."""
    from automations.services.catalog import record_content_revision

    try:
        found, hash_type = live_hash(request)
    except aws.AwsError:
        return
    if found != request.runbook_version.ssm_hash:
        try:
            record_content_revision(runbook=request.runbook, version=request.runbook_version,
                                    role=request.account.dispatch_role_arn, ssm_hash=found, hash_type=hash_type)
        except aws.AwsError:
            return
        request.runbook_version.refresh_from_db()


def content_changed_reason(request: AutomationRequest, found: str) -> str:
    return (f"The runbook's content changed after it was approved or submitted: SSM now reports hash "
            f"{found[:16]}… for {request.runbook.short_name} v{request.runbook_version.version}, the request "
            f"bound {request.document_hash[:16]}…. Nothing was started; submit the request again to run the new content.")


def record_changed_content(request: AutomationRequest, *, found: str, hash_type: str, actor, where: str) -> None:
    """Keep the new content as a catalog revision (so approvers see it) and audit the mismatch."""
    from automations.services.catalog import record_content_revision

    if hash_type:  # empty when the version is gone altogether: nothing to fetch, the refusal stands
        try:
            record_content_revision(runbook=request.runbook, version=request.runbook_version,
                                    role=request.account.dispatch_role_arn, ssm_hash=found, hash_type=hash_type)
        except aws.AwsError as error:
            log.warning("content.revision_unavailable", automation_request=request.pk, error=error.code)
    with transaction.atomic():
        audit.record(action="request.content_changed", actor=actor, request=request, details={
            "code": CONTENT_CHANGED, "where": where, "bound_hash": request.document_hash, "found_hash": found,
            "hash_type": hash_type, "version": request.runbook_version.version,
        })
        notifications.notify_on_commit("request.content_changed", request.pk, where=where)
    log.warning("content.changed", automation_request=request.pk, where=where)
