"""transition(): the one guarded status change and its audit event (written to kill surviving mutants)."""
import pytest
from django.db import transaction

from automations.errors import TransitionNotAllowed
from automations.models import AuditEvent, AutomationRequest
from automations.services.transitions import transition

Status = AutomationRequest.Status


def events(request):
    return list(AuditEvent.objects.filter(request=request).order_by("sequence"))


def test_moves_the_status_sets_fields_and_audits_once(world, submit):
    request = submit()
    before = len(events(request))
    with transaction.atomic():
        moved = transition(request, to=Status.WITHDRAWN, actor=world.alice, details={"why": "typo"},
                           status_reason="typo in the instance id")
    assert moved.status == Status.WITHDRAWN and moved.status_reason == "typo in the instance id"
    stored = AutomationRequest.objects.get(pk=request.pk)
    assert (stored.status, stored.status_reason) == (Status.WITHDRAWN, "typo in the instance id")
    new = events(request)[before:]
    assert len(new) == 1
    assert new[0].action == "request.withdrawn"  # the default action names the target status
    assert new[0].actor == world.alice
    assert new[0].details == {"from": "submitted", "to": "withdrawn", "why": "typo"}


def test_an_explicit_action_names_the_event(world, submit):
    request = submit()
    with transaction.atomic():
        transition(request, to=Status.REJECTED, actor=world.bob, action="request.rejected_by_test")
    assert events(request)[-1].action == "request.rejected_by_test"
    assert events(request)[-1].details == {"from": "submitted", "to": "rejected"}


def test_a_target_the_table_does_not_allow_is_refused_without_a_trace(world, submit):
    request = submit()
    before = len(events(request))
    with pytest.raises(TransitionNotAllowed) as refused, transaction.atomic():
        transition(request, to=Status.RUNNING, actor=None)
    assert (refused.value.current, refused.value.target) == (Status.SUBMITTED, Status.RUNNING)
    assert AutomationRequest.objects.get(pk=request.pk).status == Status.SUBMITTED
    assert len(events(request)) == before


def test_a_stale_read_loses_to_whoever_moved_first(world, submit):
    """Two approvers, a double click, a redelivered task: the second writer sees 0 rows updated."""
    request = submit()
    stale = AutomationRequest.objects.get(pk=request.pk)
    with transaction.atomic():
        transition(request, to=Status.REJECTED, actor=world.bob)
    before = len(events(request))
    with pytest.raises(TransitionNotAllowed) as refused, transaction.atomic():
        transition(stale, to=Status.WITHDRAWN, actor=world.alice)
    assert refused.value.current == Status.REJECTED  # what the database says now, not what was read
    assert refused.value.target == Status.WITHDRAWN
    assert "Someone else changed this request first" in refused.value.detail
    assert AutomationRequest.objects.get(pk=request.pk).status == Status.REJECTED
    assert len(events(request)) == before


@pytest.mark.django_db(transaction=True)
def test_refuses_to_run_outside_a_transaction(world, submit):
    """The audit event must commit with the change: no transaction, no change at all."""
    request = submit()
    with pytest.raises(RuntimeError, match="inside transaction.atomic"):
        transition(request, to=Status.WITHDRAWN, actor=world.alice)
    assert AutomationRequest.objects.get(pk=request.pk).status == Status.SUBMITTED
