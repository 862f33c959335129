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
