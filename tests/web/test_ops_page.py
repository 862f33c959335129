"""The ops page and its exports: for leads (their teams) and auditors (everyone), nobody else."""
import csv
import io

import pytest

from automations.models import AuditEvent
from tests.figures.seeding import NOW, seed_ops_world


@pytest.fixture
def seeded(world, monkeypatch):
    monkeypatch.setattr("automations.figures.ops.timezone.now", lambda: NOW)
    return seed_ops_world(world)


def test_a_lead_sees_their_teams_figures_drawn_and_tabled(world, seeded, client):
    client.force_login(world.bob)
    page = client.get("/ops/?days=7")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'aria-current="page">Operations</a>' in html
    assert "for platform." in html and 'href="?days=7" aria-current="page"' in html
    assert html.count('<svg class="bars"') == 4 and '<svg class="columns"' in html
    assert '<td class="num">20 min</td>' in html and '<td class="num">48 min</td>' in html
    assert f"web-1 ({world.web1})" in html and "etl-1" not in html  # data is not bob's team
    assert "AWS-StopEC2Instance" in html and '<td class="num">100%</td>' in html and '<td class="num">1 of 3</td>' in html
    assert '<td class="num">33%</td>' in html
    # The site's CSP allows no inline style or script: the charts use none.
    assert " style=" not in html and "<script>" not in html
    assert 'href="/ops/export/busiest-targets.csv?days=7"' in html


def test_an_auditor_sees_every_team_and_others_are_refused_on_record(world, seeded, client):
    client.force_login(world.carol)
    html = client.get("/ops/?days=7").content.decode()
    assert "for every team." in html and f"etl-1 ({world.etl1})" in html
    client.force_login(world.alice)
    assert client.get("/ops/").status_code == 403
    assert client.get("/ops/export/runs-by-outcome.csv").status_code == 403
    denied = AuditEvent.objects.filter(action="authz.denied", actor_id=world.alice.pk)
    assert sorted(event.details["path"] for event in denied) == ["/ops/", "/ops/export/runs-by-outcome.csv"]
    assert "Operations</a>" not in client.get("/runbooks/").content.decode()


def test_csv_and_json_exports_hold_exactly_the_figures(world, seeded, client):
    client.force_login(world.bob)
    response = client.get("/ops/export/failure-rate.csv?days=7")
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="delegate-failure-rate-7d-20260310.csv"'
    assert list(csv.reader(io.StringIO(response.content.decode()))) == [
        ["runbook", "region", "runs", "succeeded", "failed", "cancelled", "failure_rate"],
        ["AWS-StopEC2Instance", "eu-west-1", "1", "0", "1", "0", "1.0"],
        ["AWS-RestartEC2Instance", "eu-west-1", "4", "2", "1", "1", "0.3333"],
    ]
    body = client.get("/ops/export/time-to-approve.json?days=7").json()
    assert body["since"] == "2026-03-04T00:00:00+00:00" and body["days"] == 7
    assert body["rows"] == [{"percentile": "p50", "seconds": 1200.0, "approved_requests": 5},
                            {"percentile": "p90", "seconds": 2880.0, "approved_requests": 5}]
    targets = client.get("/ops/export/busiest-targets.json?days=7").json()["rows"]
    assert targets == [
        {"resource_id": world.web1, "name": "web-1", "label": f"web-1 ({world.web1})", "runs": 3},
        {"resource_id": world.web2, "name": "web-2", "label": f"web-2 ({world.web2})", "runs": 2}]
    per_day = client.get("/ops/export/requests-per-day.csv?days=7").content.decode().splitlines()
    assert per_day == ["day,requests", "2026-03-04,1", "2026-03-05,0", "2026-03-06,0", "2026-03-07,0",
                       "2026-03-08,2", "2026-03-09,1", "2026-03-10,3"]
    outcomes = client.get("/ops/export/runs-by-outcome.json?days=7").json()["rows"]
    assert [(row["status"], row["runs"]) for row in outcomes] == [
        ("succeeded", 2), ("failed", 1), ("cancelled", 1), ("dispatch_failed", 1)]
    exported = AuditEvent.objects.filter(action="ops.exported", actor_id=world.bob.pk).order_by("sequence")
    assert [event.details["figure"] for event in exported] == [
        "failure-rate", "time-to-approve", "busiest-targets", "requests-per-day", "runs-by-outcome"]


def test_a_tag_that_looks_like_a_formula_is_defused_in_csv(world, seeded, client):
    from automations.models import AutomationRequest

    seeded["r2"].resource_names = {world.web1: "=HYPERLINK(\"http://x\")", world.web2: "web-2"}
    AutomationRequest.objects.filter(pk=seeded["r2"].pk).update(resource_names=seeded["r2"].resource_names)
    client.force_login(world.bob)
    rows = list(csv.reader(io.StringIO(client.get("/ops/export/busiest-targets.csv?days=7").content.decode())))
    assert rows[1][1] == "'=HYPERLINK(\"http://x\")"


def test_bad_periods_and_figures_change_nothing_and_say_why(world, seeded, client):
    client.force_login(world.bob)
    html = client.get("/ops/?days=365").content.decode()
    assert "Choose a period of 7, 30, 90 days; showing 30." in html
    assert 'href="?days=30" aria-current="page"' in html
    for url in ("/ops/export/busiest-targets.csv?days=abc", "/ops/export/everything.csv",
                "/ops/export/busiest-targets.xlsx"):
        response = client.get(url)
        assert response.status_code == 400 and response.json()["code"] == "invalid_export", url
    assert not AuditEvent.objects.filter(action="ops.exported").exists()
