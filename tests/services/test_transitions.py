"""transition(): the one guarded status change and its audit event (written to kill surviving mutants)."""
from types import SimpleNamespace

import pytest
from django.db import transaction

from automations.audit import ClientInfo
from automations.errors import TransitionNotAllowed
from automations.models import AuditEvent, AutomationRequest
from automations.services import notifications
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
    # x_transition__mutmut_37: the words the person sees, exactly.
    assert refused.value.detail == "Someone else changed this request first; reload and try again."
    assert AutomationRequest.objects.get(pk=request.pk).status == Status.REJECTED
    assert len(events(request)) == before


@pytest.mark.django_db(transaction=True)
def test_refuses_to_run_outside_a_transaction(world, submit):
    """The audit event must commit with the change: no transaction, no change at all."""
    request = submit()
    with pytest.raises(RuntimeError, match="inside transaction.atomic"):
        transition(request, to=Status.WITHDRAWN, actor=world.alice)
    assert AutomationRequest.objects.get(pk=request.pk).status == Status.SUBMITTED


def test_nothing_leaves_a_terminal_status(world, submit):
    # x_transition__mutmut_5 and _7: a status with no row in TRANSITIONS must refuse, not crash.
    request = submit()
    AutomationRequest.objects.filter(pk=request.pk).update(status=Status.SUCCEEDED)
    request.refresh_from_db()
    with pytest.raises(TransitionNotAllowed) as refused, transaction.atomic():
        transition(request, to=Status.RUNNING, actor=None)
    assert (refused.value.current, refused.value.target) == (Status.SUCCEEDED, Status.RUNNING)


def test_the_audit_event_carries_where_the_change_came_from(world, submit):
    # x_transition__mutmut_44 and _50 (the client dropped), _45 and _51 (the AWS call dropped).
    request = submit()
    with transaction.atomic():
        transition(request, to=Status.WITHDRAWN, actor=world.alice,
                   client=ClientInfo(ip="203.0.113.9", user_agent="browser/9"),
                   aws=SimpleNamespace(aws_request_id="req-9", execution_id="exec-9"))
    event = events(request)[-1]
    assert (event.client_ip, event.user_agent) == ("203.0.113.9", "browser/9")
    assert (event.aws_request_id, event.execution_id) == ("req-9", "exec-9")


def test_the_notification_names_the_new_status(world, submit, monkeypatch):
    # x_transition__mutmut_60 (on_transition told no new status: nobody is notified).
    sent = []
    original = notifications.notify_on_commit
    monkeypatch.setattr(notifications, "notify_on_commit",
                        lambda event, request_id, **context: (sent.append((event, request_id)),
                                                              original(event, request_id, **context)))
    request = submit()
    with transaction.atomic():
        transition(request, to=Status.REJECTED, actor=world.bob)
    assert sent[-1] == ("request.rejected", request.pk)


def test_only_the_request_named_moves(world, submit):
    # x_transition__mutmut_18 (the UPDATE filtered on the status alone moves every request in it).
    request, bystander = submit(), submit(parameters={"InstanceId": [world.web2]})
    with transaction.atomic():
        transition(request, to=Status.WITHDRAWN, actor=world.alice)
    assert AutomationRequest.objects.get(pk=bystander.pk).status == Status.SUBMITTED
    assert not AuditEvent.objects.filter(request=bystander, action="request.withdrawn").exists()


def test_the_rows_already_loaded_are_not_read_again(world, submit, django_assert_num_queries):
    """refresh_from_db forgets cached foreign keys: the audit record then re-read the team, runbook
    and account (issue 19, three statements per transition on the dispatch path)."""
    request = AutomationRequest.objects.select_related("team", "runbook", "account").get(pk=submit().pk)
    with transaction.atomic():
        moved = transition(request, to=Status.WITHDRAWN, actor=world.alice)
        with django_assert_num_queries(0):
            assert (moved.team.name, moved.runbook.pk, moved.account.pk) == (
                world.platform.name, world.runbook.pk, world.account.pk)
    assert events(request)[-1].team == world.platform.name


def test_a_row_locked_by_the_caller_is_not_read_again_and_says_what_was_written(world, submit):
    request = submit()
    with transaction.atomic():
        locked = AutomationRequest.objects.select_for_update().get(pk=request.pk)
        moved = transition(locked, to=Status.WITHDRAWN, actor=world.alice, row_locked=True,
                           status_reason="typo in the instance id")
        assert (moved.status, moved.status_reason) == (Status.WITHDRAWN, "typo in the instance id")
    stored = AutomationRequest.objects.get(pk=request.pk)
    assert (stored.status, stored.status_reason) == (Status.WITHDRAWN, "typo in the instance id")
