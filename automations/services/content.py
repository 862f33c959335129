"""The content check: does SSM still serve, under the request's version, the content it bound?

A request binds the SSM content hash of its version at submit (AutomationRequest.document_hash,
inside the fingerprint). Right before anything acts on that approval (approving it, starting it,
signalling one of its aws:approve steps) the hash of that exact version is read again from SSM
(DescribeDocument with DocumentVersion, never $DEFAULT). A different hash means the document was
replaced (e.g. deleted and re-created under the same name and version number): nothing acts,
the new content is recorded as a catalog revision (so approvers see it), an audit event names
both hashes, and the requester and approvers are told. Reason code: `content_changed`.

The check fails closed. When SSM cannot be asked (throttled, access denied, the document
deleted) nothing acts on the approval: an approval or a step signal is refused with
`content_unverifiable` and may be tried again; the worker puts a transient failure back and
refuses a permanent one. A request that bound no hash at all (submitted before the binding
existed) is never approved, signalled or started: `content_unbound`, submit it again.
"""
from __future__ import annotations

import structlog
from django.db import transaction

from automations import audit, aws
from automations.models import AutomationRequest
from automations.services import catalog, notifications

log = structlog.get_logger(__name__)
CONTENT_CHANGED = "content_changed"
CONTENT_UNVERIFIABLE = "content_unverifiable"
CONTENT_UNBOUND = "content_unbound"


def live_hash(request: AutomationRequest) -> tuple[str, str]:
    """(Hash, HashType) SSM reports now for the request's exact document version."""
    return aws.document_hash(region=request.region, role_arn=request.account.dispatch_role_arn,
                             name=request.runbook.name, version=request.runbook_version.version)


def notice_current_content(request: AutomationRequest) -> str:
    """For the request page: read the version's hash now and record other content as a revision.

    Returns "" when SSM confirmed the content (the page then shows what SSM serves now), else why it
    could not be confirmed, for the page to say (approving checks again and refuses on its own).
    """
    try:
        found, hash_type = live_hash(request)
        if found != request.runbook_version.ssm_hash:
            catalog.record_content_revision(runbook=request.runbook, version=request.runbook_version,
                                            role=request.account.dispatch_role_arn, ssm_hash=found,
                                            hash_type=hash_type)
            request.runbook_version.refresh_from_db()
    except aws.AwsError as error:
        return (f"Delegate could not confirm the content SSM serves now for {request.runbook.short_name} "
                f"v{request.runbook_version.version} ({error.code}). Approving checks it again and is refused "
                "until SSM answers.")
    return ""


def unbound_reason(request: AutomationRequest) -> str:
    return (f"This request was submitted before Delegate bound the runbook's content (it has no content hash), "
            f"so nobody can confirm that {request.runbook.short_name} v{request.runbook_version.version} is what was "
            "approved. Nothing was started; submit the request again.")


def unverifiable_reason(request: AutomationRequest, error: aws.AwsError) -> str:
    return (f"SSM could not confirm the content of {request.runbook.short_name} v{request.runbook_version.version} "
            f"({error.code}); nothing was approved or signalled. Try again shortly; if the document was deleted, "
            "the request cannot go ahead.")


def content_changed_reason(request: AutomationRequest, found: str, *, earlier_attempt_unanswered: bool = False) -> str:
    started = ("Delegate started nothing now, but an earlier start attempt got no answer from AWS, so AWS may "
               f"have started the approved content then (an execution tagged delegate:request-id={request.pk})"
               if earlier_attempt_unanswered else "Nothing was started")
    return (f"The runbook's content changed after it was approved or submitted: SSM now reports hash "
            f"{found[:16]}… for {request.runbook.short_name} v{request.runbook_version.version}, the request "
            f"bound {request.document_hash[:16]}…. {started}; submit the request again to run the new content.")


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
