"""Each main page costs a fixed number of SQL statements whatever the data (no N+1 can come back),
and a waiting request's page survives AWS failing to describe its document.

Counts, never timings (docs/benchmarks.md has the timings, measured by bench/pages.py).
"""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db


def test_a_waiting_request_page_survives_describe_document_failing(world, submit, client, sb):
    """The approver's page reads SSM's hash of the bound version; when SSM refuses (deleted
    document, denied role) the page still answers, without the content notice."""
    item = submit()
    sb.faults.error_next("DescribeDocument", "InvalidDocument", n=5)
    client.force_login(world.bob)
    response = client.get(f"/requests/{item.pk}/")
    assert response.status_code == 200
    assert f"#{item.pk}".encode() in response.content


def _statements(client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return len(captured)


def _offer_more_runbooks(world, count: int) -> None:
    from tests import factories as f

    for n in range(count):
        runbook = f.RunbookFactory(account=world.account, name=f"Team-Restart{n:02d}", owner="123456789012",
                                   owner_kind="self")
        f.RunbookVersionFactory(runbook=runbook)
        f.TeamRunbookFactory(team=world.platform, runbook=runbook)


def test_catalog_statements_do_not_grow_with_the_runbooks_offered(world, client):
    client.force_login(world.alice)
    few = _statements(client, "/runbooks/")
    _offer_more_runbooks(world, 5)
    many = _statements(client, "/runbooks/")
    assert few == many <= 13, (few, many)  # 19 with 5 more runbooks, 14 with a second lead check (issue 19)


def test_my_requests_statements_do_not_grow_with_the_requests(world, submit, client):
    client.force_login(world.alice)
    submit()
    few = _statements(client, "/requests/")
    for _ in range(6):
        submit()
    many = _statements(client, "/requests/")
    assert few == many <= 12, (few, many)


def test_request_detail_statements_do_not_grow_with_the_thread(world, submit, client):
    from automations import services

    item = submit()
    services.request_comment(request=item, actor=world.alice, body="first")
    client.force_login(world.alice)
    few = _statements(client, f"/requests/{item.pk}/")
    for n in range(5):
        services.request_comment(request=item, actor=world.bob if n % 2 else world.alice, body=f"more {n}")
    many = _statements(client, f"/requests/{item.pk}/")
    assert few == many <= 40, (few, many)


def test_waiting_request_for_its_lead_statements_do_not_grow_with_overlapping_requests(world, submit, client):
    item = submit()
    submit(justification="once more")  # one overlap: with none, two lookups are skipped altogether
    client.force_login(world.bob)
    few = _statements(client, f"/requests/{item.pk}/")
    for _ in range(4):  # other open requests on the same target: the page lists them
        submit(justification="again")
    many = _statements(client, f"/requests/{item.pk}/")
    assert few == many <= 40, (few, many)  # 49 when each permission re-asked policy (issue 19)


def test_approval_queue_statements_stay_bounded(world, submit, client):
    for _ in range(3):
        submit()
    client.force_login(world.bob)
    assert _statements(client, "/approvals/") <= 20  # 27 when the page asked free_seats twice (issue 19)


def test_audit_search_statements_do_not_grow_with_the_log(world, submit, client):
    client.force_login(world.carol)
    submit()
    few = _statements(client, "/audit/")
    for _ in range(6):
        submit()
    many = _statements(client, "/audit/")
    assert few == many <= 12, (few, many)


def test_the_queue_page_rows_are_the_approval_queue(world, submit):
    from automations import selectors, services

    items = [submit() for _ in range(3)]
    services.request_approve(request=items[1], actor=world.frank, comment="ok")  # frank's seat is used
    submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]})  # another team's
    for user in (world.bob, world.frank, world.erin):
        rows = selectors.approval_queue_rows(user).rows
        assert [item.pk for item, _seat in rows] == [item.pk for item in selectors.approval_queue(user)]
        assert all(seat is not None for _item, seat in rows)


def test_my_requests_lists_only_the_users_own_and_all_lists_what_they_may_see(world, submit, client):
    alices = submit()
    daves = submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]})
    client.force_login(world.bob)  # platform's lead: sees alice's under "all", none under "mine"
    mine, everything = client.get("/requests/").content, client.get("/requests/?scope=all").content
    assert f'href="/requests/{alices.pk}/"'.encode() not in mine
    assert f'href="/requests/{alices.pk}/"'.encode() in everything
    assert f'href="/requests/{daves.pk}/"'.encode() not in everything
    client.force_login(world.alice)
    assert f'href="/requests/{alices.pk}/"'.encode() in client.get("/requests/").content


def _waiting_step(request, name: str):
    from automations.models import AutomationRequest, Execution, StepApproval

    AutomationRequest.objects.filter(pk=request.pk).update(status=AutomationRequest.Status.RUNNING)
    execution = Execution.objects.create(request=request, execution_id=f"{request.pk:036d}")
    return StepApproval.objects.create(execution=execution, step_execution_id=f"s-{name}", step_name=name)


def test_waiting_steps_are_listed_for_the_leads_who_may_answer_them_only(world, submit):
    """The navigation badge of every approver's page asks this: the steps first, visibility only over them."""
    from automations import selectors

    platform_step = _waiting_step(submit(), "approvePlatform")
    data_step = _waiting_step(submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]}),
                              "approveData")
    assert [entry.pk for entry in selectors.waiting_steps_for(world.bob)] == [platform_step.pk]
    assert [entry.pk for entry in selectors.waiting_steps_for(world.erin)] == [data_step.pk]
    assert selectors.waiting_steps_for(world.alice) == []  # her own request's step: never hers to answer
    assert selectors.waiting_steps_for(world.dave) == []


def test_no_waiting_step_costs_one_statement(world, submit, django_assert_num_queries):
    from automations import selectors

    submit()
    with django_assert_num_queries(1):
        assert selectors.waiting_steps_for(world.bob) == []


def test_multi_account_request_page_statements_are_the_same_at_8_and_200_locations(world, sb, client,
                                                                                  fleet_documents_removed):
    """The matrix costs the same statements whatever the run's size (issue 18: 200 locations)."""
    from tests.web.test_location_matrix import multi_account_request

    client.force_login(world.alice)
    small = multi_account_request(world, sb, accounts=2)  # 2 accounts x 4 Regions = 8 locations
    big = multi_account_request(world, sb, accounts=50)  # 200 locations
    assert small.location_count == 8 and big.location_count == 200
    few = _statements(client, f"/requests/{small.pk}/")
    many = _statements(client, f"/requests/{big.pk}/")
    failed_page = _statements(client, f"/requests/{big.pk}/?failed_only=1&locations_page=2")
    assert few == many == failed_page <= 40, (few, many, failed_page)


def test_the_queue_pages_cover_every_waiting_request_once_oldest_first(world, submit, client):
    """A backlog is paged (issue 19: the 1,000,000-request seed gave a lead 400 rows on one page);
    the count and the badge still cover the whole queue, and a page's cost does not grow with it."""
    from automations import selectors

    items = [submit() for _ in range(7)]
    submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]})  # not bob's
    seen, after, pages = [], None, 0
    while True:
        page = selectors.approval_queue_rows(world.bob, after=after, size=3)
        assert page.total == 7
        seen += [item.pk for item, _seat in page.rows]
        pages += 1
        if not page.more:
            break
        last = page.rows[-1][0]
        after = (last.created_at, last.pk)
    assert seen == [item.pk for item in items] and pages == 3
    client.force_login(world.bob)
    first = client.get("/approvals/")
    assert first.status_code == 200
    for item in items:  # 7 < a page of 50: all on the first page, no pager
        assert f"#{item.pk}</a>".encode() in first.content
    assert b"Newer waiting requests" not in first.content


def test_the_queue_page_links_to_the_next_page_and_counts_the_whole_queue(world, submit, client, monkeypatch):
    from automations import selectors

    monkeypatch.setattr(selectors, "QUEUE_PAGE_SIZE", 2)
    items = [submit() for _ in range(5)]
    client.force_login(world.bob)
    html = client.get("/approvals/").content.decode()
    assert "Showing 1–2 of 5 waiting" in html and 'aria-label="5 waiting"' in html
    row = '?from=approvals">#{}</a>'.format
    assert row(items[0].pk) in html and row(items[2].pk) not in html
    start = html.index('href="?after=') + len('href="?after=')
    second = client.get("/approvals/?after=" + html[start:html.index('"', start)]).content.decode()
    assert "Showing 3–4 of 5 waiting" in second and row(items[2].pk) in second
    assert row(items[1].pk) not in second
    forged = client.get("/approvals/?after=not-a-cursor")
    assert forged.status_code == 200 and "Showing 1–2 of 5" in forged.content.decode()


def test_a_leads_page_asks_the_navigation_roles_once(world, submit, client):
    """The queue's candidates need policy.navigation_roles too; the navigation's answer serves both."""
    submit()
    client.force_login(world.bob)
    for path in ("/approvals/", "/runbooks/"):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        roles = [q["sql"] for q in captured.captured_queries if "automations_approvaldelegation WHERE delegate_id" in q["sql"]]
        assert len(roles) == 1, (path, len(roles))
