"""The multi-account matrix at issue 18's scale (200 locations): bounded pages of accounts that
cover every location exactly once, filters that combine with paging, the summary per Region and
per chosen OU above it, and the API's `locations` paged the same way with a stable shape.

The request is submitted for real (the sandbox's Organizations resolves the granted OUs); its
resolved accounts are then widened in the database to 50 (the sandbox seeds 12) and children are
recorded as status sync records them, so the page is read at the size the issue asks for.
"""
import json
import uuid

import boto3
import pytest
from django.db import transaction
from django.test import Client
from rest_framework.test import APIClient

from automations import audit, aws, selectors, services
from automations.models import AutomationRequest, LocationExecution, TeamLocationGrant
from sandbox import world as sandbox_world
from tests import factories as f

pytestmark = pytest.mark.django_db
REGIONS = ["eu-west-1", "us-east-1", "eu-central-1", "us-west-2"]
OUS = sorted(sandbox_world.OU_IDS.values())
RUNBOOK = {"schemaVersion": "0.3", "description": "Reads this account's instances", "parameters": {},
           "mainSteps": [{"name": "look", "action": "aws:executeAwsApi",
                          "inputs": {"Service": "ec2", "Api": "DescribeInstances"}}]}
STATUSES = ("Success", "Failed", "InProgress", "TimedOut", "Pending")


@pytest.fixture(autouse=True)
def _fleet_documents_removed(fleet_documents_removed):
    """Each test's Delegate-Fleet-… document is deleted after it (tests/conftest.py)."""


def multi_account_request(world, sb, *, accounts: int, regions: list[str] = REGIONS,
                          children: bool = True, status: str = AutomationRequest.Status.RUNNING) -> AutomationRequest:
    """A multi-account request over `accounts` accounts (spread over the three OUs) x `regions`,
    submitted, then put in `status`; with `children`, every location but one in five has a child
    in one of STATUSES."""
    world.account.regions = REGIONS
    world.account.save()
    name = f"Delegate-Fleet-{uuid.uuid4().hex[:8]}"
    text = json.dumps(RUNBOOK)
    boto3.client("ssm", region_name="eu-west-1", endpoint_url=sb.url).create_document(
        Name=name, Content=text, DocumentType="Automation", DocumentFormat="JSON")
    runbook = f.RunbookFactory(account=world.account, name=name, owner="Self", allow_unmanaged_identity=True)
    version = f.RunbookVersionFactory(runbook=runbook, version="1", content=text, document_format="JSON")
    f.TeamRunbookFactory(team=world.platform, runbook=version.runbook)
    for ou in OUS:
        TeamLocationGrant.objects.get_or_create(team=world.platform, account=world.account, target_id=ou)
    request = services.request_submit(actor=world.alice, team=world.platform, runbook_id=runbook.pk, parameters={},
                                      location_targets=OUS, location_regions=regions, location_max_concurrency="10",
                                      location_max_errors="5")
    return widen(request, accounts=accounts, regions=regions, children=children, status=status)


def widen(request: AutomationRequest, *, accounts: int, regions: list[str] = REGIONS, children: bool = True,
          status: str = AutomationRequest.Status.RUNNING) -> AutomationRequest:
    """The request's resolved accounts widened in the database to `accounts` (spread over its
    targets), over `regions`, in `status`; with `children`, every location but one in five has a
    child recorded in one of STATUSES, as status sync records them."""
    ids = [f"4{n:011d}" for n in range(1, accounts + 1)]
    targets = list(request.location_targets)
    AutomationRequest.objects.filter(pk=request.pk).update(
        status=status, location_accounts=ids, location_regions=regions,
        location_sources={a: [targets[n % len(targets)]] for n, a in enumerate(ids)})
    if children:
        made = LocationExecution.objects.bulk_create([
            LocationExecution(request=request, execution_id=str(uuid.uuid4()), account_id=a, region=r,
                              aws_status=STATUSES[(n + m) % len(STATUSES)],
                              failure_message="Step fails" if STATUSES[(n + m) % len(STATUSES)] == "Failed" else "")
            for n, a in enumerate(ids) for m, r in enumerate(regions) if (n + m) % 5 != 4])
        for child in made:  # audited once each, as status sync does (services/location_status.py)
            with transaction.atomic():
                audit.record(action="execution.location_started", actor=None, request=request,
                             account_id=child.account_id, region=child.region,
                             details={"child_execution_id": child.execution_id, "account_id": child.account_id,
                                      "region": child.region},
                             aws=aws.AwsCall(operation="DescribeAutomationStepExecutions",
                                             execution_id=child.execution_id))
    request.refresh_from_db()
    return request


def _all_pages(request, **filters) -> list[dict]:
    pages, number = [], 1
    while True:
        matrix = selectors.location_matrix(request, page=number, **filters)
        pages.append(matrix)
        if matrix["page"]["next"] is None:
            return pages
        number = matrix["page"]["next"]


def test_pages_of_accounts_cover_every_location_exactly_once(world, sb):
    request = multi_account_request(world, sb, accounts=50)
    pages = _all_pages(request)
    assert [len(p["rows"]) for p in pages] == [25, 25]
    cells = [(c["account_id"], c["region"]) for p in pages for row in p["rows"] for c in row["cells"]]
    assert len(cells) == len(set(cells)) == 200 == pages[0]["total"]
    assert set(cells) == {(a, r) for a in request.location_accounts for r in REGIONS}
    # Each page says the same counts, summary and failures: they are over the whole run.
    assert all(p["counts"] == pages[0]["counts"] and p["by_region"] == pages[0]["by_region"] for p in pages)
    assert sum(pages[0]["counts"].values()) == 200
    recorded = dict(LocationExecution.objects.filter(request=request).values_list("execution_id", "aws_status"))
    assert all(c["aws_status"] == recorded.get(c["execution_id"], "") for p in pages for row in p["rows"]
               for c in row["cells"])
    # A page past the end shows the last one, never an empty matrix of a run that has locations.
    assert selectors.location_matrix(request, page=99)["page"]["number"] == 2


def test_the_summary_counts_each_region_and_ou_from_the_recorded_children(world, sb):
    request = multi_account_request(world, sb, accounts=50)
    matrix = selectors.location_matrix(request)
    children = list(LocationExecution.objects.filter(request=request))
    for summary in matrix["by_region"]:
        mine = [c for c in children if c.region == summary["region"]]
        assert summary["failed"] == sum(c.aws_status in ("Failed", "TimedOut") for c in mine)
        assert summary["succeeded"] == sum(c.aws_status == "Success" for c in mine)
        assert summary["not_started"] == 50 - len(mine)
    assert sum(t["failed"] for t in matrix["by_target"]) == matrix["counts"]["failed"] == matrix["failed_total"]
    assert len(matrix["failed"]) == selectors.FAILED_SHOWN < matrix["failed_total"]
    assert all(item["aws_status"] in ("Failed", "TimedOut") for item in matrix["failed"])


@pytest.mark.parametrize("filters", [{"failed_only": True}, {"via": OUS[1]}, {"failed_only": True, "via": OUS[2]}])
def test_filters_combine_with_paging(world, sb, filters):
    request = multi_account_request(world, sb, accounts=50)
    matrix = selectors.location_matrix(request)
    sources = request.location_sources
    failed_accounts = {item["account_id"] for page in _all_pages(request) for row in page["rows"]
                       for item in row["cells"] if item["state"] == "failed"}
    expected = [a for a in request.location_accounts
                if (not filters.get("failed_only") or a in failed_accounts)
                and (not filters.get("via") or filters["via"] in sources[a])]
    pages = [p for p in _all_pages(request, **filters)]
    shown = [row["account_id"] for p in pages for row in p["rows"]]
    assert shown == expected and len(set(shown)) == len(shown)
    assert all(p["page"]["accounts"] == len(expected) for p in pages)
    assert len(pages) == max(1, -(-len(expected) // 25))
    assert all(p["counts"] == matrix["counts"] for p in pages)  # the counts stay the whole run's


def test_the_page_and_the_api_show_the_same_page_of_accounts(world, sb):
    request = multi_account_request(world, sb, accounts=50)
    page = Client()
    page.force_login(world.alice)
    html = page.get(f"/requests/{request.pk}/", {"locations_page": "2"}).content.decode()
    expected = selectors.location_matrix(request, page=2)
    assert html.count('class="location-row"') == len(expected["rows"]) > 0
    assert all(f"<code>{row['account_id']}</code>" in html for row in expected["rows"])
    assert "page 2 of" in html and 'rel="prev"' in html
    api = APIClient()
    api.force_authenticate(world.alice)
    body = api.get(f"/api/v1/requests/{request.pk}/", {"locations_page": "2"}).json()["locations"]
    assert [row["account_id"] for row in body["rows"]] == [row["account_id"] for row in expected["rows"]]
    assert body["page"] == expected["page"]
    first = api.get(f"/api/v1/requests/{request.pk}/").json()["locations"]
    assert set(first) == set(body)  # a stable shape, whichever page
    assert first["page"]["number"] == 1 and len(first["rows"]) == 25
    assert api.get(f"/api/v1/requests/{request.pk}/", {"locations_page": "x"}).status_code == 400  # the API is strict
    assert api.get(f"/api/v1/requests/{request.pk}/", {"locations_page": "99"}).json()["locations"]["page"]["number"] == 2
    by_ou = api.get(f"/api/v1/requests/{request.pk}/", {"via": OUS[0], "failed_only": "1"}).json()["locations"]
    assert by_ou["rows"] and all(OUS[0] in row["via"] for row in by_ou["rows"])
    assert all(any(c["state"] == "failed" for c in row["cells"]) for row in by_ou["rows"])


def test_the_page_links_each_cell_and_failure_to_its_location_page(world, sb):
    request = multi_account_request(world, sb, accounts=8)
    page = Client()
    page.force_login(world.alice)
    html = page.get(f"/requests/{request.pk}/").content.decode()
    child = LocationExecution.objects.filter(request=request, aws_status="Failed").first()
    assert f'href="/requests/{request.pk}/locations/{child.execution_id}/"' in html
    assert "Failed locations (" in html
    assert 'class="table-scroll"' in html  # the matrix scrolls in its box, not the page


def test_the_matrix_escapes_what_aws_reported(world, sb):
    """The rows are built in Python (templatetags/location_matrix.py): AWS's words stay text."""
    request = multi_account_request(world, sb, accounts=2, children=False)
    LocationExecution.objects.create(request=request, execution_id=str(uuid.uuid4()),
                                     account_id=request.location_accounts[0], region=REGIONS[0], aws_status="Failed",
                                     failure_message='<script>alert("x")</script> & "quoted"')
    page = Client()
    page.force_login(world.alice)
    html = page.get(f"/requests/{request.pk}/").content.decode()
    assert "<script>alert" not in html
    assert 'title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quoted&quot;"' in html
    assert html.count('class="location-row"') == 2 and html.count('<span class="muted">not started</span>') == 7


def test_the_timeline_folds_one_entry_per_child_into_one_line(world, sb):
    """200 `execution.location_started` events stay in the audit log, one per child; the request
    page's timeline says how many in one entry where the first stood (the matrix lists each)."""
    from automations.models import AuditEvent

    request = multi_account_request(world, sb, accounts=50)
    recorded = AuditEvent.objects.filter(request=request, action="execution.location_started").count()
    assert recorded == LocationExecution.objects.filter(request=request).count() == 160
    timeline = selectors.request_timeline(request)
    assert [e["count"] for e in timeline if isinstance(e, dict)] == [160]
    assert [e.action for e in timeline if not isinstance(e, dict)] == ["request.submitted"]
    assert isinstance(timeline[-1], dict)  # after the submit, where the first child was recorded
    page = Client()
    page.force_login(world.alice)
    html = page.get(f"/requests/{request.pk}/").content.decode()
    assert "160 child executions started</strong>" in html
    assert html.count('<ol class="timeline">') == 1 and html.count("child execution started") == 0
