"""Known requests at fixed times, written straight to the tables (read-side tests: the figures
must count what is there, whatever path wrote it)."""
from __future__ import annotations

import datetime as dt

from automations.models import AutomationRequest

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=dt.UTC)


def seed_request(world, *, team, created, status, approve_after=None, dispatched=True, runbook=None,
                 version=None, resources=(), names=None, requester=None):
    item = AutomationRequest.objects.create(
        team=team, requester=requester or (world.alice if team == world.platform else world.dave),
        runbook=runbook or world.runbook, runbook_version=version or world.version, account=world.account,
        region="eu-west-1", resources=list(resources), resource_names=names or {}, status=status)
    approved = created + dt.timedelta(minutes=approve_after) if approve_after is not None else None
    AutomationRequest.objects.filter(pk=item.pk).update(
        created_at=created, approved_at=approved,
        dispatched_at=(approved + dt.timedelta(seconds=5)) if approved and dispatched else None)
    item.refresh_from_db()
    return item


def seed_ops_world(world):
    """Nine requests, in the order they were made (ids rise with time):

    | #  | team     | created      | approved after | outcome          | targets        |
    |----|----------|--------------|----------------|------------------|----------------|
    | r6 | platform | Mar 2 09:00  | 5 min          | timed_out        | web-1          |
    | r5 | platform | Mar 4 09:00  | 60 min         | cancelled        | web-1 ("old")  |
    | r3 | platform | Mar 8 08:00  | 20 min         | succeeded        | web-2          |
    | r4 | platform | Mar 8 09:00  | —              | rejected         |                |
    | r7 | data     | Mar 9 08:00  | 40 min         | succeeded        | etl-1          |
    | r9 | platform | Mar 9 12:00  | 15 min         | dispatch_failed  | (stop runbook) |
    | r1 | platform | Mar 10 09:00 | 10 min         | succeeded        | web-1          |
    | r2 | platform | Mar 10 10:00 | 30 min         | failed           | web-1, web-2   |
    | r8 | platform | Mar 10 11:00 | —              | submitted        | web-1          |
    """
    from tests import factories as f

    S = AutomationRequest.Status
    stop_version = f.RunbookVersionFactory(runbook=f.RunbookFactory(account=world.account, name="AWS-StopEC2Instance"))
    web1, web2, etl1 = world.web1, world.web2, world.etl1
    p, d = world.platform, world.data
    rows = {}
    rows["r6"] = seed_request(world, team=p, created=at(2, 9), status=S.TIMED_OUT, approve_after=5,
                              resources=[web1], names={web1: "web-1"})
    rows["r5"] = seed_request(world, team=p, created=at(4, 9), status=S.CANCELLED, approve_after=60,
                              resources=[web1], names={web1: "old-name"})
    rows["r3"] = seed_request(world, team=p, created=at(8, 8), status=S.SUCCEEDED, approve_after=20,
                              resources=[web2], names={web2: "web-2"})
    rows["r4"] = seed_request(world, team=p, created=at(8, 9), status=S.REJECTED, resources=[web1])
    rows["r7"] = seed_request(world, team=d, created=at(9, 8), status=S.SUCCEEDED, approve_after=40,
                              resources=[etl1], names={etl1: "etl-1"})
    rows["r9"] = seed_request(world, team=p, created=at(9, 12), status=S.DISPATCH_FAILED, approve_after=15,
                              runbook=stop_version.runbook, version=stop_version)
    rows["r1"] = seed_request(world, team=p, created=at(10, 9), status=S.SUCCEEDED, approve_after=10,
                              resources=[web1], names={web1: "web-1"})
    rows["r2"] = seed_request(world, team=p, created=at(10, 10), status=S.FAILED, approve_after=30,
                              resources=[web1, web2], names={web1: "web-1", web2: "web-2"})
    rows["r8"] = seed_request(world, team=p, created=at(10, 11), status=S.SUBMITTED, resources=[web1],
                              names={web1: "web-1"})
    rows["stop_runbook"] = stop_version.runbook
    return rows
