"""policy.free_seat for many requests at once, in a fixed number of queries.

The approval queue, its count in the navigation and the queue page ask "which seat would this
user approve from?" for every waiting request. Asked one request at a time that is about six
queries each (policy, pool, escalation, delegations, approvals): 800 queries and 6 s for a lead
with 40 waiting requests (docs/benchmarks.md). The rules stay in automations.policy: this module
only fetches the same facts in bulk and then applies policy.seats()'s order. tests/policy/test_batch.py
checks that both answer alike, seat for seat.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.utils import timezone

from automations import policy
from automations.models import (
    Approval,
    ApprovalDelegation,
    AutomationRequest,
    Escalation,
    Membership,
    TeamRunbook,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class _Pools:
    """Who leads which team and who is in which group, fetched once per person."""

    def __init__(self):
        self._facts: dict[int, tuple[set[int], set[int]]] = {}

    def _of(self, person) -> tuple[set[int], set[int]]:
        if person.pk not in self._facts:
            led = set(Membership.objects.filter(user_id=person.pk, role=Membership.Role.LEAD)
                      .values_list("team_id", flat=True))
            groups = set(person.groups.values_list("pk", flat=True))
            self._facts[person.pk] = (led, groups)
        return self._facts[person.pk]

    def groups(self, person) -> set[int]:
        return self._of(person)[1]

    def in_pool(self, person, team_id: int, team_policy: TeamRunbook | None) -> bool:
        """policy.in_pool: the policy's named group, else the team's leads; active people only."""
        if not person.is_active:
            return False
        led, groups = self._of(person)
        if team_policy is not None and team_policy.approver_group_id:
            return team_policy.approver_group_id in groups
        return team_id in led


def free_seats(user: AbstractBaseUser, requests: Iterable[AutomationRequest], *,
               at: dt.datetime | None = None) -> dict[int, policy.Seat | None]:
    """{request pk: policy.free_seat(user, request)} for every request given.

    Side effect, on purpose: each request's policy row is cached on it (as policy.policy_for does),
    so policy.approvals_required() on the same objects costs nothing afterwards.
    """
    items = list(requests)
    if not items:
        return {}
    at = at or timezone.now()
    ids = [item.pk for item in items]
    policies = {(p.team_id, p.runbook_id): p for p in TeamRunbook.objects.select_related(
        "approver_group", "escalation_group").filter(team_id__in={i.team_id for i in items},
                                                     runbook_id__in={i.runbook_id for i in items})}
    taken: dict[int, set[int]] = defaultdict(set)
    for request_id, approver_id in Approval.objects.filter(request_id__in=ids).values_list("request_id", "approver_id"):
        taken[request_id].add(approver_id)
    for request_id, behalf_id in (Approval.objects.filter(request_id__in=ids, delegated__isnull=False)
                                  .values_list("request_id", "delegated__on_behalf_of_id")):
        taken[request_id].add(behalf_id)
    escalated = dict(Escalation.objects.filter(request_id__in=ids).values_list("request_id", "group_id"))
    delegations: dict[int, list[ApprovalDelegation]] = defaultdict(list)
    for delegation in (ApprovalDelegation.objects.select_related("delegator")
                       .filter(delegate_id=user.pk, team_id__in={i.team_id for i in items}, revoked_at=None,
                               starts_at__lte=at, ends_at__gt=at).order_by("starts_at", "pk")):
        delegations[delegation.team_id].append(delegation)
    pools = _Pools()

    seats: dict[int, policy.Seat | None] = {}
    for item in items:
        team_policy = policies.get((item.team_id, item.runbook_id))
        item._policy_cache = team_policy
        seats[item.pk] = _free_seat(user, item, team_policy, taken[item.pk], escalated.get(item.pk),
                                    delegations[item.team_id], pools)
    return seats


def _free_seat(user, item, team_policy, taken, escalation_group, delegations, pools):
    # The same order and rules as policy.seats() followed by policy.free_seat().
    if not user.is_authenticated or not user.is_active or user.pk == item.requester_id or user.pk in taken:
        return None
    found: list[policy.Seat] = []
    if pools.in_pool(user, item.team_id, team_policy):
        found.append(policy.Seat("group" if team_policy is not None and team_policy.approver_group_id else "lead"))
    if escalation_group is not None and escalation_group in pools.groups(user):
        found.append(policy.Seat("escalation"))
    for delegation in delegations:
        if delegation.delegator_id != item.requester_id and pools.in_pool(delegation.delegator, item.team_id,
                                                                          team_policy):
            found.append(policy.Seat("delegation", on_behalf_of=delegation.delegator, delegation=delegation))
    for seat in found:
        if seat.on_behalf_of is None or seat.on_behalf_of.pk not in taken:
            return seat
    return None
