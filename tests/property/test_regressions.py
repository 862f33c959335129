"""Regressions found by the lifecycle state machine (tests/property/lifecycle.py), one test per finding.

Each is the machine's shrunk counterexample written out by hand, so it runs in a second and names
the issue that owns the fix.
"""
import boto3
import pytest

from automations import services
from automations.models import AutomationRequest, Execution, TeamRunbook
from tests import factories as f
from tests.property.lifecycle import document_text

Status = AutomationRequest.Status


@pytest.fixture
def own_runbook(world, sb):
    """A runbook the account owns (so it can be deleted and re-created), version 1 in the catalog."""
    import uuid

    from automations.runbooks import content_hash, load_document, parse_parameters, step_summary

    name = f"Delegate-Regression-{uuid.uuid4().hex[:12]}"
    ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url=sb.url)
    ssm.create_document(Name=name, Content=document_text(0), DocumentType="Automation", DocumentFormat="YAML")
    runbook = f.RunbookFactory(account=world.account, name=name, owner="Self", owner_kind="self")
    text = document_text(0)
    document = load_document(text, "YAML")
    f.RunbookVersionFactory(runbook=runbook, version="1", document_format="YAML", content=text,
                            content_hash=content_hash(text), parameters=parse_parameters(document),
                            steps=step_summary(document), problems=[])
    TeamRunbook.objects.create(team=world.platform, runbook=runbook, approvals_required=1,
                               justification_required=False)
    yield runbook, ssm
    try:
        ssm.delete_document(Name=name)
    except Exception:  # noqa: BLE001 - already gone
        pass


def test_content_swapped_after_approval_is_not_started(world, sb, own_runbook):
    """Machine steps: policy_and_first_request(required=1, approved=True) → document_changes() →
    deliver_to_an_approved_request(fault='none'). Bob approved generation 0; the runbook was then
    deleted and re-created under the same name (SSM numbers it version 1 again) with other steps,
    and dispatch started the new content under bob's approval."""
    runbook, ssm = own_runbook
    request = services.request_submit(actor=world.alice, team=world.platform, runbook_id=runbook.pk,
                                      parameters={"Note": ["a"]})
    services.request_approve(request=request, actor=world.bob)
    ssm.delete_document(Name=runbook.name)
    ssm.create_document(Name=runbook.name, Content=document_text(1), DocumentType="Automation",
                        DocumentFormat="YAML")

    services.request_dispatch(request_id=request.pk)

    token = str(request.client_token)
    started = [e for e in sb.executions() if e.get("ClientToken") == token]
    assert started == [], "content nobody approved was started under the approval"
    assert not Execution.objects.filter(request=request).exists()


def test_same_content_after_approval_is_started(world, sb, own_runbook):
    """The control for the test above: with the approved content unchanged the run starts, so the
    refusal above is about the content, not a dispatch that never starts."""
    runbook, _ = own_runbook
    request = services.request_submit(actor=world.alice, team=world.platform, runbook_id=runbook.pk,
                                      parameters={"Note": ["a"]})
    services.request_approve(request=request, actor=world.bob)
    assert services.request_dispatch(request_id=request.pk) == "started"
    assert len([e for e in sb.executions() if e.get("ClientToken") == str(request.client_token)]) == 1
