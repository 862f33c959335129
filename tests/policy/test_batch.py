"""policy_batch.free_seats answers exactly what policy.free_seat answers, request by request, for
leads, named groups, escalations, delegations (used and unused) and the requester, in a bounded
number of queries."""
import datetime as dt

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from automations import policy, services
from automations.models import ApprovalDelegation, AutomationRequest, Escalation
from automations.policy.batch import free_seats
from tests import factories as f

pytestmark = pytest.mark.django_db


def _scene(world, submit):
    """Waiting requests of both teams, one escalated to a group, one approved by a delegate, one
    under a named-group policy; carol stands in for bob, frank for erin (already over)."""
    now = timezone.now()
    oncall = Group.objects.create(name="oncall")
    world.carol.groups.add(oncall)
    mine = [submit() for _ in range(3)]
    theirs = [submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]}) for _ in range(2)]
    Escalation.objects.create(request=mine[0], group=oncall)
    delegation = ApprovalDelegation.objects.create(delegator=world.bob, delegate=world.carol, team=world.platform,
                                                   ends_at=now + dt.timedelta(days=1))
    ApprovalDelegation.objects.create(delegator=world.erin, delegate=world.frank, team=world.data,
                                      starts_at=now - dt.timedelta(days=2), ends_at=now - dt.timedelta(days=1))
    world.platform_policy.approvals_required = 2
    world.platform_policy.save()
    services.request_approve(request=mine[1], actor=world.carol)  # carol for bob: bob's seat is used
    grouped = f.RunbookFactory(account=world.account, name="AWS-StopEC2Instance")
    f.RunbookVersionFactory(runbook=grouped, filename="aws-StopEC2Instance.json")
    f.TeamRunbookFactory(team=world.platform, runbook=grouped, approver_group=oncall)
    named = services.request_submit(actor=world.alice, team=world.platform, runbook_id=grouped.pk,
                                    parameters={"InstanceId": [world.web2]})
    assert delegation.approvals.exists()
    return [*mine, *theirs, named]


def test_free_seats_match_free_seat_for_everyone(world, submit):
    requests = _scene(world, submit)
    for user in (world.alice, world.bob, world.frank, world.dave, world.erin, world.carol):
        fresh = list(AutomationRequest.objects.filter(pk__in=[r.pk for r in requests]))
        batch = free_seats(user, fresh)
        one_by_one = {r.pk: policy.free_seat(user, AutomationRequest.objects.get(pk=r.pk)) for r in requests}
        assert batch == one_by_one, user.username
    # The scene covers the interesting answers, not only None.
    assert {seat.via for seat in free_seats(world.carol, requests).values() if seat} >= {"escalation", "delegation",
                                                                                         "group"}
    assert free_seats(world.alice, requests) == {r.pk: None for r in requests}  # never her own


def test_free_seats_take_a_fixed_number_of_queries(world, submit):
    few = [submit() for _ in range(2)]
    many = few + [submit() for _ in range(8)]
    counts = []
    for batch in (few, many):
        items = list(AutomationRequest.objects.filter(pk__in=[r.pk for r in batch]))
        with CaptureQueriesContext(connection) as captured:
            free_seats(world.bob, items)
        counts.append(len(captured))
    assert counts[0] == counts[1] <= 8, counts


def test_approval_queue_page_queries_do_not_grow_with_the_queue(world, submit, client):
    """The queue page and its navigation badge: the same number of queries for 2 or 12 requests."""
    client.force_login(world.bob)
    counts = []
    for extra in (2, 10):
        for _ in range(extra):
            submit()
        with CaptureQueriesContext(connection) as captured:
            response = client.get("/approvals/")
        assert response.status_code == 200
        counts.append(len(captured))
    assert response.content.count(b'href="/requests/') >= 12
    assert counts[0] == counts[1], counts


def test_the_queue_lists_exactly_the_visible_waiting_requests_with_a_free_seat(world, submit):
    """selectors.approval_queue_ids narrows its candidates to what a user might decide (not all they
    may see); the answer must stay policy.free_seat over everything visible, for each kind of seat,
    and for an auditor who also leads a team (who sees every team's requests)."""
    from automations import selectors

    requests = _scene(world, submit)
    world.bob.groups.add(Group.objects.get(name="auditors"))  # bob leads platform and audits everything
    for user in (world.alice, world.bob, world.frank, world.dave, world.erin, world.carol):
        user = type(user).objects.get(pk=user.pk)  # no permission cache from earlier calls
        expected = sorted(item.pk for item in selectors.requests_visible_to(user).filter(status="submitted")
                          if policy.free_seat(user, item) is not None)
        assert sorted(selectors.approval_queue_ids(user)) == expected, user.username
        assert [item.pk for item, _seat in selectors.approval_queue_rows(user).rows] == sorted(
            expected, key=lambda pk: (AutomationRequest.objects.get(pk=pk).created_at, pk)), user.username
    assert len(requests) == 6 and selectors.approval_queue_ids(world.bob)  # not a vacuous comparison
