"""A run's progress: step durations and the step running now as AWS reported them, an estimate
only from this team's past successful runs (and "no past runs" without any), and links to the
execution in the region's AWS console and to CloudTrail for the session Delegate really used."""
import datetime as dt

import pytest

from automations import services
from automations.figures.progress import cloudtrail_lookup_url, execution_console_url, run_progress
from automations.models import AutomationRequest, Execution
from tests.figures.seeding import at, seed_request

S = AutomationRequest.Status
EXECUTION = "6a1d3a5c-0000-4000-8000-0000000000a1"


def _execution(request, *, execution_id, started, ended=None, steps=(), current_step="", aws_status="Success"):
    return Execution.objects.create(request=request, execution_id=execution_id, aws_status=aws_status,
                                    started_at=started, ended_at=ended, steps=list(steps), current_step=current_step)


def _past_run(world, *, team, status, seconds, number):
    item = seed_request(world, team=team, created=at(1, 8), status=status, approve_after=1)
    _execution(item, execution_id=f"6a1d3a5c-0000-4000-8000-00000000{number:04d}", started=at(1, 9),
               ended=at(1, 9) + dt.timedelta(seconds=seconds))


@pytest.fixture
def running(world):
    item = seed_request(world, team=world.platform, created=at(10, 9), status=S.RUNNING, approve_after=2,
                        resources=[world.web1], names={world.web1: "web-1"})
    _execution(item, execution_id=EXECUTION, started=at(10, 9, 5), aws_status="InProgress",
               current_step="startInstance", steps=[
                   {"name": "stopInstance", "action": "aws:changeInstanceState", "status": "Success",
                    "started_at": "2026-03-10T09:05:00.000000Z", "ended_at": "2026-03-10T09:06:15.500000Z",
                    "outputs": {}, "failure_message": ""},
                   {"name": "startInstance", "action": "aws:changeInstanceState", "status": "InProgress",
                    "started_at": "2026-03-10T09:06:16.000000Z", "ended_at": None, "outputs": {},
                    "failure_message": ""},
                   {"name": "verify", "action": "aws:assertAwsResourceProperty", "status": "Pending",
                    "started_at": None, "ended_at": None}])
    return item


def test_steps_carry_their_durations_and_the_running_one_is_marked(world, running):
    progress = run_progress(running)
    assert [(step.name, step.duration, step.is_current) for step in progress.steps] == [
        ("stopInstance", dt.timedelta(seconds=75.5), False),
        ("startInstance", None, True),
        ("verify", None, False)]
    assert progress.current_step == "startInstance"
    assert progress.steps[1].started_at == dt.datetime(2026, 3, 10, 9, 6, 16, tzinfo=dt.UTC)


def test_the_estimate_is_the_median_of_this_teams_successful_runs_only(world, running):
    for number, (team, status, seconds) in enumerate([
            (world.platform, S.SUCCEEDED, 100), (world.platform, S.SUCCEEDED, 300),
            (world.platform, S.SUCCEEDED, 240),
            (world.platform, S.FAILED, 5),  # failures do not say how long a run takes
            (world.data, S.SUCCEEDED, 9000)]):  # another team's runs are theirs
        _past_run(world, team=team, status=status, seconds=seconds, number=number)
    estimate = run_progress(running).estimate
    assert (estimate.past_runs, estimate.median) == (3, dt.timedelta(seconds=240))
    assert estimate.finish_at == at(10, 9, 5) + dt.timedelta(seconds=240)


def test_no_past_runs_means_no_estimate_and_the_page_says_so(world, running, client):
    estimate = run_progress(running).estimate
    assert (estimate.past_runs, estimate.median, estimate.finish_at) == (0, None, None)
    client.force_login(world.alice)
    html = client.get(f"/requests/{running.pk}/").content.decode()
    assert "No past runs of this runbook by platform to estimate from." in html
    assert '<tr class="current-step" aria-current="step"><td><code>startInstance</code>' in html
    assert "<td class=\"num\">1 min 16 s</td>" in html  # stopInstance took 75.5 s, rounded


def test_the_page_and_the_api_give_the_estimate_and_the_console_link(world, running, client):
    _past_run(world, team=world.platform, status=S.SUCCEEDED, seconds=600, number=7)
    client.force_login(world.alice)
    html = client.get(f"/requests/{running.pk}/").content.decode()
    assert 'About <time datetime="2026-03-10T09:15:00+00:00">09:15:00</time> UTC' in html
    assert "the median of 1 past successful run by platform is 10 min." in html
    console = f"https://eu-west-1.console.aws.amazon.com/systems-manager/automation/execution/{EXECUTION}?region=eu-west-1"
    assert f'href="{console}"' in html
    progress = client.get(f"/api/v1/requests/{running.pk}/").json()["progress"]
    assert progress["estimate"] == {"past_successful_runs": 1, "median_seconds": 600.0,
                                    "estimated_finish": "2026-03-10T09:15:00Z"}
    assert progress["console_url"] == console and progress["current_step"] == "startInstance"
    assert [(s["name"], s["duration_seconds"], s["is_current"]) for s in progress["steps"]] == [
        ("stopInstance", 75.5, False), ("startInstance", None, True), ("verify", None, False)]
    listed = client.get("/api/v1/requests/").json()["results"]
    assert "progress" not in listed[0]  # lists stay cheap


def test_a_request_that_never_reached_aws_has_no_progress(world, client):
    item = seed_request(world, team=world.platform, created=at(10, 9), status=S.SUBMITTED)
    assert run_progress(item) is None
    client.force_login(world.alice)
    assert client.get(f"/api/v1/requests/{item.pk}/").json()["progress"] is None


@pytest.mark.parametrize(("region", "host"), [
    ("eu-west-1", "eu-west-1.console.aws.amazon.com"),
    ("ap-southeast-2", "ap-southeast-2.console.aws.amazon.com"),
    ("cn-north-1", "console.amazonaws.cn"),
    ("us-gov-west-1", "console.amazonaws-us-gov.com"),
])
def test_console_links_follow_the_region_and_partition(region, host):
    assert execution_console_url(region, EXECUTION) == (
        f"https://{host}/systems-manager/automation/execution/{EXECUTION}?region={region}")
    assert cloudtrail_lookup_url(region, "delegate-req-42-a+b@x") == (
        f"https://{host}/cloudtrailv2/home?region={region}#/events?Username=delegate-req-42-a%2Bb%40x")


@pytest.mark.parametrize("region", ["", "eu-west-1/../../evil", "javascript:alert(1)", "EU-WEST-1"])
def test_no_link_from_a_region_that_is_not_one(region):
    assert execution_console_url(region, EXECUTION) == "" and cloudtrail_lookup_url(region, "s") == ""
    assert execution_console_url("eu-west-1", "../x") == ""


def test_the_cloudtrail_link_names_the_session_dispatch_really_used(world, submit, sb, client):
    request = services.request_approve(request=submit(), actor=world.bob)
    assert services.request_dispatch(request_id=request.pk) == "started"
    request.refresh_from_db()
    progress = run_progress(request)
    session = f"delegate-req-{request.pk}-alice"
    assert [(link.purpose, link.session_name, link.source_identity) for link in progress.sessions] == [
        ("start", session, "alice")]
    assert progress.sessions[0].url.endswith(f"#/events?Username={session}")
    assert progress.custom_endpoint == sb.url  # the sandbox stands in for AWS, and the page says so
    client.force_login(world.alice)
    html = client.get(f"/requests/{request.pk}/").content.decode()
    assert f"CloudTrail event history of session <span class=\"mono\">{session}</span>" in html
    assert "the AWS console and CloudTrail do not know this run" in html
