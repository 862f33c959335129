"""The ops figures against known seeded requests, with the exact numbers a person would count."""
import datetime as dt

import pytest

from automations.figures.ops import ops_figures
from tests.figures.seeding import NOW, seed_ops_world

minutes = lambda n: dt.timedelta(minutes=n)  # noqa: E731


@pytest.fixture
def seeded(world):
    return seed_ops_world(world)


def test_a_lead_sees_their_team_over_seven_days(world, seeded):
    figures = ops_figures(world.bob, days=7, now=NOW)
    assert figures.since == dt.datetime(2026, 3, 4, tzinfo=dt.UTC)
    assert [(day.day, count) for day, count in figures.requests_per_day] == [
        (4, 1), (5, 0), (6, 0), (7, 0), (8, 2), (9, 1), (10, 3)]
    assert figures.submitted == 7
    # Approved after 10, 15, 20, 30 and 60 minutes: the median is the middle one; p90 lies
    # 0.6 of the way from 30 to 60 (rank 0.9 × 4 = 3.6).
    assert figures.approved == 5
    assert figures.approve_p50 == minutes(20)
    assert figures.approve_p90 == minutes(48)
    assert figures.outcomes == [("succeeded", "Succeeded", 2), ("failed", "Failed", 1),
                                ("cancelled", "Cancelled", 1), ("dispatch_failed", "Could not start", 1)]
    assert figures.runs == 5
    stop, restart = figures.runbooks  # worst first
    assert (stop.name, stop.runs, stop.failed, stop.succeeded, stop.failure_rate) == (
        "AWS-StopEC2Instance", 1, 1, 0, 1.0)
    assert (restart.name, restart.runs, restart.succeeded, restart.failed, restart.cancelled) == (
        "AWS-RestartEC2Instance", 4, 2, 1, 1)
    assert restart.failure_rate == pytest.approx(1 / 3)
    # web-1: r5, r1, r2 (r4 was never run, r8 is not approved); named as the newest of them named it.
    assert [(t.label, t.runs) for t in figures.targets] == [
        (f"web-1 ({world.web1})", 3), (f"web-2 ({world.web2})", 2)]


def test_a_lead_never_counts_another_team(world, seeded):
    figures = ops_figures(world.erin, days=7, now=NOW)
    assert figures.submitted == 1 and figures.approved == 1 and figures.approve_p50 == minutes(40)
    assert [(t.label, t.runs) for t in figures.targets] == [(f"etl-1 ({world.etl1})", 1)]
    # alice's own requests are platform's; a member who leads nothing sees no figures at all
    assert ops_figures(world.alice, days=90, now=NOW).submitted == 0


def test_an_auditor_sees_every_team(world, seeded):
    figures = ops_figures(world.carol, days=7, now=NOW)
    assert figures.submitted == 8 and dict((d.day, c) for d, c in figures.requests_per_day)[9] == 2
    # 10, 15, 20, 30, 40, 60 minutes: median halfway between 20 and 30; p90 halfway between 40 and 60.
    assert (figures.approve_p50, figures.approve_p90) == (minutes(25), minutes(50))
    assert [(t.label, t.runs) for t in figures.targets] == [
        (f"web-1 ({world.web1})", 3), (f"web-2 ({world.web2})", 2), (f"etl-1 ({world.etl1})", 1)]


def test_thirty_days_take_in_the_older_timed_out_run(world, seeded):
    figures = ops_figures(world.bob, days=30, now=NOW)
    assert figures.submitted == 8 and len(figures.requests_per_day) == 30
    assert (figures.approve_p50, figures.approve_p90) == (minutes(17.5), minutes(45))
    assert ("timed_out", "Timed out", 1) in figures.outcomes
    restart = next(rate for rate in figures.runbooks if rate.name == "AWS-RestartEC2Instance")
    assert (restart.runs, restart.failed, restart.failure_rate) == (5, 2, 0.5)  # timed out counts as failed


def test_nothing_in_the_period_gives_no_percentiles_and_empty_lists(world):
    figures = ops_figures(world.bob, days=7, now=NOW)
    assert figures.submitted == 0 and figures.approve_p50 is None and figures.approve_p90 is None
    assert figures.outcomes == [] and figures.runbooks == [] and figures.targets == []


def test_only_the_offered_periods(world):
    with pytest.raises(ValueError):
        ops_figures(world.bob, days=365, now=NOW)


def test_figures_are_a_fixed_number_of_queries_however_many_requests(world, seeded, django_assert_max_num_queries):
    with django_assert_max_num_queries(12):
        ops_figures(world.carol, days=90, now=NOW)
