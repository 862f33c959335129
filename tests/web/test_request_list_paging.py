"""My requests pages by keyset (created_at, id), never by OFFSET and COUNT: the page costs the same
on the thousandth page as on the first, and walking Older then Newer visits every request once.
"""
import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from automations.models import AutomationRequest

pytestmark = pytest.mark.django_db

_LINK = re.compile(r'href="\?([^"]*)" rel="(prev|next)"')
_ROW = re.compile(r'href="/requests/(\d+)/">#')


def _clone(item, count: int) -> list[int]:
    """`count` copies of one submitted request, two per created_at second (ties break by id)."""
    rows = []
    for n in range(count):
        rows.append(AutomationRequest(
            **{field.attname: getattr(item, field.attname) for field in AutomationRequest._meta.concrete_fields
               if field.attname not in ("id", "client_token", "created_at")},
            client_token=uuid.uuid4()))
    created = AutomationRequest.objects.bulk_create(rows)
    for n, row in enumerate(created):
        # auto_now_add set now(); spread them into the past with pairs sharing one instant.
        AutomationRequest.objects.filter(pk=row.pk).update(created_at=item.created_at - timedelta(seconds=1 + n // 2))
    return [row.pk for row in created]


def _page(client, query: str = ""):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/requests/?{query}")
    assert response.status_code == 200
    html = response.content.decode()
    links = {rel: target.replace("&amp;", "&") for target, rel in _LINK.findall(html)}
    return [int(pk) for pk in _ROW.findall(html)], links, [q["sql"].upper() for q in captured]


def test_older_then_newer_visits_every_request_once_in_order(world, submit, client):
    first = submit()
    _clone(first, 59)
    expected = list(AutomationRequest.objects.filter(requester=world.alice)
                    .order_by("-created_at", "-id").values_list("pk", flat=True))
    assert len(expected) == 60
    client.force_login(world.alice)

    seen, pages, query = [], [], ""
    while True:
        rows, links, statements = _page(client, query)
        assert 0 < len(rows) <= 25
        assert not [sql for sql in statements if " OFFSET " in sql or "COUNT(" in sql], [sql[:300] for sql in statements if " OFFSET " in sql or "COUNT(" in sql]
        seen += rows
        pages.append(rows)
        if "next" not in links:
            break
        query = links["next"]
    assert seen == expected
    assert [len(rows) for rows in pages] == [25, 25, 10]

    back = []
    while "prev" in links:
        rows, links, _ = _page(client, links["prev"])
        back = rows + back
    assert back == expected[:50]


def test_a_forged_or_foreign_cursor_shows_nothing_it_should_not(world, submit, client):
    mine = submit()
    theirs = submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]})
    client.force_login(world.alice)
    for query in ("before=garbage", "before=1_x", "after=-5_3", "before=99999999999999999999_1",
                  f"before={int(theirs.created_at.timestamp() * 1e6) + 10}_{theirs.pk + 1}"):
        rows, _, _ = _page(client, query)
        assert theirs.pk not in rows
        assert rows in ([mine.pk], []), (query, rows)


def test_the_status_filter_survives_paging(world, submit, client):
    first = submit()
    _clone(first, 30)
    client.force_login(world.alice)
    rows, links, _ = _page(client, "scope=mine&status=submitted")
    assert len(rows) == 25 and "status=submitted" in links["next"]
    rows, _, _ = _page(client, links["next"])
    assert len(rows) == 6
