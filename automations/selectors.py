"""Reads scoped to the user asking. Fetch by pk through these, so an invisible object is a 404."""
from __future__ import annotations

from dataclasses import dataclass

import datetime as dt
import math
from typing import TYPE_CHECKING

from django.db.models import Q, QuerySet

from automations import aws, policy
from automations.aws import inventory
from automations.models import AuditEvent, AutomationRequest, Membership, StepApproval, Team, TeamRunbook

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def teams_of(user: AbstractBaseUser) -> QuerySet[Team]:
    return Team.objects.filter(memberships__user=user).distinct()


def teams_led_by(user: AbstractBaseUser) -> QuerySet[Team]:
    return Team.objects.filter(memberships__user=user, memberships__role=Membership.Role.LEAD).distinct()


def _request_rows() -> QuerySet[AutomationRequest]:
    # The runbook's document text is not shown on request lists and pages; it can be tens of KB a row.
    return AutomationRequest.objects.select_related(
        "team", "requester", "runbook", "runbook_version", "account"
    ).defer("runbook_version__content", "runbook_version__description")


def requests_of(user: AbstractBaseUser) -> QuerySet[AutomationRequest]:
    """The user's own requests ("My requests"): always within requests_visible_to(user), without
    building and running its team, decider and auditor conditions (a third of that page's time)."""
    if not user.is_authenticated:
        return AutomationRequest.objects.none()
    return _request_rows().filter(requester=user)


def requests_visible_to(user: AbstractBaseUser) -> QuerySet[AutomationRequest]:
    """Requesters see their own; leads see their teams'; approvers what they decide; auditors everything."""
    queryset = _request_rows()
    if not user.is_authenticated:
        return queryset.none()
    if user.is_superuser or policy.is_auditor(user):
        return queryset
    led = Membership.objects.filter(user=user, role=Membership.Role.LEAD).values("team_id")
    return queryset.filter(Q(requester=user) | Q(team_id__in=led) | policy.decider_filter(user))


def may_see_ops(user: AbstractBaseUser) -> bool:
    """The ops view is for auditors (and superusers), who see everything, and team leads."""
    return user.is_authenticated and (user.is_superuser or policy.is_auditor(user) or teams_led_by(user).exists())


def ops_requests(user: AbstractBaseUser) -> QuerySet[AutomationRequest]:
    """What the ops view counts: every request for auditors and superusers, as in audit; the teams
    a lead leads, and nothing else (not their own requests in other teams, nor the ones they only
    decide as a named approver: the figures describe teams); nothing for anyone else."""
    if not user.is_authenticated:
        return AutomationRequest.objects.none()
    if user.is_superuser or policy.is_auditor(user):
        return AutomationRequest.objects.all()
    return AutomationRequest.objects.filter(team_id__in=teams_led_by(user).values("pk"))


def approval_queue(user: AbstractBaseUser) -> QuerySet[AutomationRequest]:
    """Submitted requests the user may approve now (policy.free_seat), never their own."""
    return requests_visible_to(user).filter(pk__in=approval_queue_ids(user)).order_by("created_at", "id")


def _queue_candidates(user: AbstractBaseUser, roles: policy.NavigationRoles | None = None) -> QuerySet[AutomationRequest]:
    """Waiting requests this user might decide: their teams' as a lead, or as a decider (named
    group, escalation, delegation); policy.free_seat then says which they may approve now.

    Narrower than requests_visible_to on purpose, never wider: every seat is one of these (a lead
    seat is a led team, the others are decider_filter's), and for an auditor who also leads a team
    "visible" would be every waiting request of every team, each then checked for a seat.
    `roles`: policy.navigation_roles(user) when the caller already asked (the navigation has)."""
    if not user.is_authenticated:
        return AutomationRequest.objects.none()
    led = Membership.objects.filter(user=user, role=Membership.Role.LEAD).values("team_id")
    deciding = Q(team_id__in=led)
    # Someone who only leads (no group, delegation or escalation) matches none of decider_filter's
    # branches; asking it anyway turns an index lookup by team into a scan of every waiting request.
    if (roles or policy.navigation_roles(user)).decides_beyond_leading:
        deciding |= policy.decider_filter(user, decided=False)
    return (_request_rows().filter(status=AutomationRequest.Status.SUBMITTED).filter(deciding)
            .exclude(requester=user))  # ones they approved already: free_seat says no seat (it reads the approvals)


def _queue_seats(user: AbstractBaseUser, roles: policy.NavigationRoles | None = None,
                 ) -> list[tuple[AutomationRequest, policy.Seat]]:
    """Every request waiting for this user, oldest first, as light rows (ids, team, runbook,
    requester, created_at) with the seat they would approve from; free_seats asks ~8 queries for all."""
    from automations.policy.batch import free_seats

    candidates = list(_queue_candidates(user, roles).select_related(None)
                      .only("id", "team_id", "runbook_id", "requester_id", "created_at").order_by("created_at", "id"))
    seats = free_seats(user, candidates)
    return [(item, seats[item.pk]) for item in candidates if seats[item.pk] is not None]


def approval_queue_ids(user: AbstractBaseUser, roles: policy.NavigationRoles | None = None) -> list[int]:
    """The ids approval_queue() lists, oldest first: what the navigation badge counts."""
    return [item.pk for item, _seat in _queue_seats(user, roles)]


@dataclass
class QueuePage:
    rows: list  # [(request with its relations, seat)], oldest first
    total: int  # every request waiting for this user, on any page
    first: int  # the position of rows[0] in the whole queue, from 1
    more: bool  # whether requests wait after this page


QUEUE_PAGE_SIZE = 50


def approval_queue_rows(user: AbstractBaseUser, *, after: tuple[dt.datetime, int] | None = None,
                        size: int = QUEUE_PAGE_SIZE, roles: policy.NavigationRoles | None = None) -> QueuePage:
    """One page of the queue, oldest first, continuing after (created_at, id) `after`.

    Which requests wait for the user is decided over all of them (light rows, one free_seats);
    only the page's rows are then read in full with their relations, so a backlog of hundreds
    costs one pass of the rules, not hundreds of full rows and table rows. `after` only narrows
    the user's own queue."""
    queued = _queue_seats(user, roles)
    start = 0
    if after is not None:
        start = next((n for n, (item, _seat) in enumerate(queued) if (item.created_at, item.pk) > after),
                     len(queued))
    window = queued[start:start + size]
    # A row shows the version's number, not its parsed parameters and steps (JSON decoded per row).
    full = {item.pk: item for item in (_request_rows().select_related("escalation").prefetch_related("approvals")
                                       .defer("runbook_version__parameters", "runbook_version__steps",
                                              "runbook_version__identity", "runbook_version__problems",
                                              "execution_preview")
                                       .filter(pk__in=[item.pk for item, _seat in window]))}
    rows = []
    for light, seat in window:
        item = full.get(light.pk)
        if item is None:  # decided or withdrawn between the two reads: not waiting any more
            continue
        item._policy_cache = light._policy_cache  # free_seats read it: approvals_required() costs nothing
        rows.append((item, seat))
    return QueuePage(rows=rows, total=len(queued), first=start + 1, more=start + size < len(queued))


def may_answer_step(user: AbstractBaseUser, entry: StepApproval, item: AutomationRequest) -> bool:
    """The request-approval rules for a waiting step: in the pool, never the requester, once."""
    return (user.pk != item.requester_id and bool(policy.seats(user, item))
            and not entry.decisions.filter(approver=user).exists())


def waiting_steps_for(user: AbstractBaseUser) -> list[StepApproval]:
    """Steps of running requests (aws:approve, aws:pause) that this user may answer now, oldest first.

    The waiting steps are few (the state is indexed): they are listed first, and the request
    visibility filter (several subqueries) runs only over their requests, and only when there are
    any; the navigation badge asks this on every page an approver opens."""
    if not user.is_authenticated:
        return []
    entries = list(StepApproval.objects.select_related("execution__request__runbook", "execution__request__team",
                                                       "execution__request__requester")
                   .filter(state=StepApproval.State.WAITING,
                           execution__request__status=AutomationRequest.Status.RUNNING)
                   .exclude(execution__request__requester=user).order_by("first_seen_at", "pk"))
    if not entries:
        return []
    visible = set(requests_visible_to(user).filter(pk__in={entry.execution.request_id for entry in entries})
                  .values_list("pk", flat=True))
    return [entry for entry in entries
            if entry.execution.request_id in visible and may_answer_step(user, entry, entry.execution.request)]


OPEN_STATUSES = (AutomationRequest.Status.SUBMITTED, AutomationRequest.Status.APPROVED,
                 AutomationRequest.Status.DISPATCHING, AutomationRequest.Status.RUNNING)
RUNNING_STATUSES = (AutomationRequest.Status.DISPATCHING, AutomationRequest.Status.RUNNING)


def requests_overlapping(*, account_id: int, region: str, resources, runbook_id: int | None = None,
                         statuses=OPEN_STATUSES, exclude_pk: int | None = None) -> list[AutomationRequest]:
    """Unscoped on purpose (the duplicate guard and the per-target lock must see every team's runs):
    requests in `statuses` in this account and region that touch any of `resources`, oldest first.
    Callers show only what the user may see. Overlap is computed here, not with a JSON lookup,
    so the demo's SQLite works too; open requests are few."""
    wanted = set(resources or [])
    if not wanted:
        return []
    candidates = AutomationRequest.objects.filter(account_id=account_id, region=region, status__in=statuses)
    if runbook_id is not None:
        candidates = candidates.filter(runbook_id=runbook_id)
    if exclude_pk is not None:
        candidates = candidates.exclude(pk=exclude_pk)
    matching = [pk for pk, touched in candidates.values_list("pk", "resources") if wanted.intersection(touched or [])]
    return list(AutomationRequest.objects.filter(pk__in=matching).select_related("requester", "runbook")
                .order_by("created_at", "id"))


def overlaps_among(items) -> dict[int, list[int]]:
    """For a page of requests: the other open requests of the same runbook sharing a target, by pk."""
    items = [item for item in items if item.resources]
    if not items:
        return {}
    others = list(AutomationRequest.objects.filter(
        status__in=OPEN_STATUSES, runbook_id__in={item.runbook_id for item in items})
        .values_list("pk", "runbook_id", "account_id", "region", "resources"))
    # An index from (runbook, account, region, resource) to the open requests touching it, so a
    # page of 40 waiting requests costs one pass over the open ones, not 40.
    touching: dict[tuple, list[int]] = {}
    for pk, runbook_id, account_id, region, touched in others:
        for resource in set(touched or []):
            touching.setdefault((runbook_id, account_id, region, resource), []).append(pk)
    found: dict[int, list[int]] = {}
    for item in items:
        pks: set[int] = set()
        for resource in set(item.resources):
            pks.update(touching.get((item.runbook_id, item.account_id, item.region, resource), ()))
        pks.discard(item.pk)
        found[item.pk] = sorted(pks)
    return found


def runbook_policies_for(user: AbstractBaseUser) -> QuerySet[TeamRunbook]:
    """The runbooks the user's teams may request, with the policy that allows each."""
    return (
        TeamRunbook.objects.select_related("team", "runbook", "runbook__account")
        .filter(team__memberships__user=user, enabled=True, runbook__available=True)
        .order_by("runbook__name", "team__name")
        .distinct()
    )


def audit_events_visible_to(user: AbstractBaseUser) -> QuerySet[AuditEvent]:
    """Auditors and superusers see the whole log; leads see their teams' events; others their own.

    "Their own" stops at their teams: an authz.denied event of someone probing another team's
    request carries that team's runbook and resources, and whether the id exists. It belongs to
    the probed team's trail (and the auditors'), never to the prober's, or the log would answer
    what the 404 hid.
    """
    queryset = AuditEvent.objects.all()
    if user.is_superuser or policy.is_auditor(user):
        return queryset
    led = list(teams_led_by(user).values_list("name", flat=True))
    mine = [*teams_of(user).values_list("name", flat=True), ""]
    own = Q(actor_id=user.pk, team__in=mine) & ~Q(action__startswith="authz.")
    return queryset.filter(own | Q(team__in=led))


def team_resource_allowlist(team, account) -> frozenset[str]:
    """The buckets, DB instances and queues (canonical names) an admin allows this team to name."""
    from automations.models import TeamResource

    return frozenset(row.canonical for row in TeamResource.objects.filter(team=team, account=account)
                     .select_related("account"))


#
# Reads from AWS for pages: pages never import the gateway; they read AWS state through here.
#

def resolved_targets(item: AutomationRequest) -> tuple[list[dict], str]:
    """The request's resources as AWS describes them now (state, type, tags), and an error text."""
    if not item.resources:
        return [], ""
    try:
        found = inventory.describe_targets(list(item.resources), region=item.region,
                                           role_arn=item.account.dispatch_role_arn)
    except aws.AwsError as error:
        return [{"id": resource, "missing": False, "tags": {}} for resource in item.resources], \
            f"The inventory could not be read ({error.code}); tags are not shown."
    rows = []
    for resource in item.resources:
        described = found.get(resource)
        rows.append({"id": resource, "missing": described is None,
                     "state": (described or {}).get("state", ""), "type": (described or {}).get("type", ""),
                     "tags": dict(sorted((described or {}).get("tags", {}).items()))})
    return rows, ""


def inventory_for_pickers(team_policy: TeamRunbook):
    """The pickers' view of the team's inventory in the runbook's account and region."""
    runbook, team = team_policy.runbook, team_policy.team

    def resources(kind: str, query: str) -> list[dict]:
        return inventory.picker_choices(
            kind,
            tag=team.scope_tag,
            account_id=runbook.account.account_id,
            region=runbook.region,
            role_arn=runbook.account.dispatch_role_arn,
            query=query,
        )

    return resources


# Multi-account runs ---------------------------------------------------------------------------

LOCATION_FAILED = frozenset({"Failed", "CompletedWithFailure", "Rejected", "Exited", "ChangeCalendarOverrideRejected",
                             "Cancelled", "TimedOut"})
LOCATION_SUCCEEDED = frozenset({"Success", "CompletedWithSuccess"})


LOCATION_PAGE_ACCOUNTS = 25  # accounts per page of the matrix: at 4 Regions, 100 cells
FAILED_SHOWN = 10  # failed locations listed above the matrix (all of them: the failed-only filter)
_STATES = ("succeeded", "failed", "running", "not_started")


def _state_of(aws_status: str | None) -> str:
    if aws_status is None:
        return "not_started"
    if aws_status in LOCATION_SUCCEEDED:
        return "succeeded"
    return "failed" if aws_status in LOCATION_FAILED else "running"


LOCATION_STARTED = "execution.location_started"


def request_timeline(request: AutomationRequest) -> list:
    """The request page's timeline: its audit events in order, with a multi-account run's one
    `execution.location_started` per child (200 at 200 locations) folded into one entry where the
    first of them stood: how many, the first and last time (the matrix lists each location). Two
    queries whatever the run's size."""
    from django.db.models import Count, Max, Min

    events = list(request.audit_events.exclude(action=LOCATION_STARTED).order_by("sequence"))
    if not request.location_targets:
        return events
    started = request.audit_events.filter(action=LOCATION_STARTED).aggregate(
        count=Count("pk"), sequence=Min("sequence"), first=Min("occurred_at"), last=Max("occurred_at"))
    if not started["count"]:
        return events
    folded = {"folded": True, **started}
    at = next((n for n, event in enumerate(events) if event.sequence > started["sequence"]), len(events))
    return [*events[:at], folded, *events[at:]]


def location_query(params) -> dict:
    """The matrix's three query parameters (failed_only=1, via=<account/OU>, locations_page=N), read
    the same way by the request page and the API from their query strings."""
    try:
        page = int(str(params.get("locations_page", "1"))[:6])
    except ValueError:
        page = 1
    return {"failed_only": params.get("failed_only") == "1", "via": str(params.get("via", ""))[:68], "page": page}


def location_matrix(request: AutomationRequest, *, failed_only: bool = False, via: str = "", page: int = 1,
                    page_size: int = LOCATION_PAGE_ACCOUNTS) -> dict | None:
    """A multi-account request's account × Region matrix as the database knows it (status sync
    records each child execution: services/location_status.py). A location without a recorded
    child shows "not started" (AWS has not started it yet, or the sync has not seen it yet).
    The request must already be one the user may see (the caller got it through a selector).

    Counts, the summary per Region and per chosen account/OU and the failed locations cover the
    whole run; `rows` is one page of `page_size` accounts (in the approved, sorted account order)
    of those the filters keep, so at 200 locations the page builds 100 cells, not 200, and the
    pages of one filter cover each of its accounts exactly once. One query, whatever the size."""
    if not request.location_targets:
        return None
    children = {(c["account_id"], c["region"]): c for c in request.location_executions.order_by().values(
        "account_id", "region", "aws_status", "execution_id", "failure_message", "started_at", "ended_at")}
    sources = request.location_sources or {}
    via = via if via in request.location_targets else ""
    regions = list(request.location_regions)
    targets = list(request.location_targets)
    counts = dict.fromkeys(_STATES, 0)
    by_region = {region: dict.fromkeys(_STATES, 0) for region in regions}
    by_target = {target: dict.fromkeys(_STATES, 0) for target in targets}
    failed, kept = [], []
    states = {}
    for account_id in request.location_accounts:
        account_failed = False
        for region in regions:
            child = children.get((account_id, region))
            state = _state_of(child["aws_status"] if child else None)
            states[(account_id, region)] = state
            counts[state] += 1
            by_region[region][state] += 1
            for target in sources.get(account_id, []):
                if target in by_target:
                    by_target[target][state] += 1
            if state == "failed":
                account_failed = True
                failed.append({"account_id": account_id, "region": region, "aws_status": child["aws_status"],
                               "execution_id": child["execution_id"], "failure_message": child["failure_message"]})
        if (not failed_only or account_failed) and (not via or via in sources.get(account_id, [])):
            kept.append(account_id)
    page_size = max(1, page_size)
    pages = max(1, -(-len(kept) // page_size))
    number = min(max(1, page), pages)
    rows = []
    for account_id in kept[(number - 1) * page_size:number * page_size]:
        cells = []
        for region in regions:
            child = children.get((account_id, region))
            cells.append({
                "account_id": account_id, "region": region, "state": states[(account_id, region)],
                "aws_status": child["aws_status"] if child else "",
                "execution_id": child["execution_id"] if child else "",
                "failure_message": child["failure_message"] if child else "",
            })
        rows.append({"account_id": account_id, "via": sources.get(account_id, []), "cells": cells})
    total = len(request.location_accounts) * len(regions)
    done = counts["succeeded"] + counts["failed"]
    return {
        "estimate": _location_estimate(request, children.values(), left=total - done, total=total),
        "targets": targets, "regions": regions, "accounts": list(request.location_accounts),
        "max_concurrency": request.location_max_concurrency, "max_errors": request.location_max_errors,
        "total": total, "counts": counts, "finished": done,
        "progress_percent": round(100 * done / total) if total else 0,
        "by_region": [{"region": region, **by_region[region]} for region in regions],
        "by_target": [{"target": target, **by_target[target]} for target in targets],
        "failed": failed[:FAILED_SHOWN], "failed_total": len(failed),
        "page": {"number": number, "pages": pages, "size": page_size, "accounts": len(kept),
                 "first": (number - 1) * page_size + 1 if kept else 0,
                 "last": min(number * page_size, len(kept)),
                 "previous": number - 1 if number > 1 else None, "next": number + 1 if number < pages else None},
        "rows": rows, "failed_only": failed_only, "via": via,
    }


def _at_a_time(max_concurrency: str, total: int) -> int:
    # TargetLocationMaxConcurrency: a number, or a percentage of the locations (at least one).
    value = (max_concurrency or "1").strip()
    if value.endswith("%"):
        return max(1, total * int(value[:-1] or 0) // 100)
    return max(1, int(value or 1))


def _location_estimate(request: AutomationRequest, children, *, left: int, total: int) -> dict | None:
    """When the run should end: the locations left, `at a time` per round, times the median time of
    the locations this run already finished. None before one finished (nothing to go on) or when
    none is left; never a guess from elsewhere."""
    import math

    from django.utils import timezone

    took = sorted((c["ended_at"] - c["started_at"]).total_seconds() for c in children
                  if c["started_at"] and c["ended_at"] and c["aws_status"] in LOCATION_SUCCEEDED | LOCATION_FAILED)
    if not left or not took:
        return None
    median = took[len(took) // 2] if len(took) % 2 else (took[len(took) // 2 - 1] + took[len(took) // 2]) / 2
    at_a_time = _at_a_time(request.location_max_concurrency, total)
    rounds = math.ceil(left / at_a_time)
    return {"finished": len(took), "median_seconds": median, "at_a_time": at_a_time, "rounds_left": rounds,
            "finish_at": timezone.now() + dt.timedelta(seconds=rounds * median)}


def location_grants_for(team_policy: TeamRunbook) -> list:
    """The accounts and OUs the team may target with this runbook (its account's organization)."""
    from automations.models import TeamLocationGrant

    return list(TeamLocationGrant.objects.filter(team_id=team_policy.team_id, account_id=team_policy.runbook.account_id)
                .order_by("target_id"))


def location_child(request: AutomationRequest, execution_id: str):
    """One recorded child execution of a request the user may see (None if it is not one of its)."""
    return request.location_executions.filter(execution_id=execution_id).first()


def member_read_role_arn(account_id: str) -> str:
    from django.conf import settings

    return f"arn:aws:iam::{account_id}:role/{settings.DELEGATE_MEMBER_READ_ROLE_NAME}"


def location_child_steps(request: AutomationRequest, child) -> tuple[list[dict], str]:
    """The child's steps as AWS reports them now, or ([], why not). AWS answers for a child where it
    runs ("specify the appropriate account, Region, and AutomationExecutionId"): so the read-only
    session of Delegate's member read role in the child's account, in the child's Region."""
    role_arn = member_read_role_arn(child.account_id)
    try:
        steps = aws.step_executions(region=child.region, role_arn=role_arn, execution_id=child.execution_id)
    except aws.AwsError as error:
        return [], (f"AWS did not return the steps ({error.code}), read as {role_arn} in {child.region}: "
                    "that role must exist in the member account and trust Delegate (docs/multi-account.md).")
    return [{"name": s.get("StepName", ""), "action": s.get("Action", ""), "status": s.get("StepStatus", ""),
             "failure_message": s.get("FailureMessage", ""), "outputs": s.get("Outputs", {})} for s in steps], ""


def request_hold(item: AutomationRequest) -> dict | None:
    """Why an approved request (already visible to the reader) waits before dispatch, from its outbox
    row and the hold's audit event: a change freeze, a CLOSED change calendar ("held by change
    calendar X until <next OPEN time>"), a run-at time. None when it is not held."""
    from automations.models import DispatchOutbox

    if item.status != AutomationRequest.Status.APPROVED:
        return None
    row = DispatchOutbox.objects.filter(pk=item.pk).first()
    if row is None or not row.last_error.startswith("held"):
        return None
    event = AuditEvent.objects.filter(request_id=item.pk, action="dispatch.held").order_by("-sequence").first()
    details = event.details if event else {}
    return {"reason": details.get("reason", ""), "message": row.last_error, "until": row.next_attempt_at,
            "calendars": details.get("calendars") or [], "calendar_state": details.get("state", "")}


def change_calendar_state(item: AutomationRequest, *, at=None) -> dict | None:
    """What AWS says of the change calendars gating a request at its run's time (GetCalendarState):
    {"calendars", "state" (OPEN, CLOSED, or UNKNOWN when AWS could not evaluate them), "next_transition",
    "at", "error"}; None when no calendar gates it. Dispatch and the approve path ask it too."""
    import structlog
    from django.utils import timezone

    from automations.aws import change_control

    names = policy.request_calendars(item)
    if not names:
        return None
    when = policy.run_time(item, at=at or timezone.now())
    try:
        state = change_control.calendar_state(region=item.region, role_arn=item.account.dispatch_role_arn,
                                              calendar_names=names, at=when)
    except aws.AwsError as error:
        structlog.get_logger(__name__).warning("calendar.unavailable", automation_request=item.pk, error=error.code)
        return {"calendars": names, "state": "UNKNOWN", "next_transition": None, "at": when,
                "error": f"{error.code}: {error.message}".strip(": ")}
    return {"calendars": names, "state": state.state, "next_transition": state.next_transition, "at": when, "error": ""}
