"""Names everywhere: resources stored with their Name tags at submit, shown as "web-1 (i-…)", and
the audit search finding Name tags, partial text and any case for actor, runbook and resource."""
from automations import services
from automations.models import AuditEvent


def _sequences(client, **query) -> set[int]:
    response = client.get("/audit/", query)
    assert response.status_code == 200
    return {event.sequence for event in response.context["page"].events}


class TestNamesStoredAtSubmit:
    def test_the_request_keeps_the_name_tags_and_pages_show_them(self, world, submit, client):
        request = submit(parameters={"InstanceId": [world.web1]})
        assert request.resource_names == {world.web1: "web-1"}
        client.force_login(world.bob)
        label = f"web-1 ({world.web1})"
        for url in (f"/requests/{request.pk}/", "/approvals/", "/requests/?scope=all", "/audit/"):
            assert label in client.get(url).content.decode(), url


class TestAuditSearch:
    def test_name_tag_partial_id_and_any_case(self, world, submit, client):
        web1 = submit(parameters={"InstanceId": [world.web1]})
        web2 = submit(parameters={"InstanceId": [world.web2]})
        services.request_approve(request=web1, actor=world.bob)
        client.force_login(world.carol)
        about_web1 = set(AuditEvent.objects.filter(request=web1).values_list("sequence", flat=True))
        about_web2 = set(AuditEvent.objects.filter(request=web2).values_list("sequence", flat=True))
        for text in ("web-1", "WEB-1", "Web-1 ", world.web1, world.web1[:9].upper()[:2].lower() + world.web1[2:9]):
            found = _sequences(client, resource=text)
            assert about_web1 <= found, text
            if text.strip().lower() == "web-1":
                assert not (about_web2 & found), text
        assert _sequences(client, resource="no-such-name") == set()

    def test_actor_and_runbook_match_part_of_the_name_in_any_case(self, world, submit, client):
        request = submit()
        services.request_approve(request=request, actor=world.bob)
        approved = AuditEvent.objects.get(request=request, action="request.approved").sequence
        client.force_login(world.carol)
        for actor in ("bob", "Bob", "bo", "BO"):
            assert approved in _sequences(client, actor=actor), actor
        assert approved not in _sequences(client, actor="alice")
        for runbook in ("restart", "RestartEC2", "aws-restartec2instance"):
            assert approved in _sequences(client, runbook=runbook), runbook
        assert _sequences(client, runbook="snapshot") == set()


def test_the_api_carries_the_names_stored_at_submit(world, submit):
    from rest_framework.test import APIClient

    request = submit(parameters={"InstanceId": [world.web1]})
    api = APIClient()
    api.force_login(world.alice)
    assert api.get(f"/api/v1/requests/{request.pk}/").json()["resource_names"] == {world.web1: "web-1"}


def test_the_preview_my_requests_and_the_catalog_search_speak_names(world, sb, client):
    client.force_login(world.alice)
    preview = client.post(f"/runbooks/{world.runbook.pk}/request/", {
        "version": "default", "mode": "simple", "param_InstanceId": [world.web1], "preview": "1",
        "justification": "leak"})
    assert preview.context["preview"] is not None
    assert f"web-1 ({world.web1})" in preview.content.decode()
    submit = client.post(f"/runbooks/{world.runbook.pk}/request/", {
        "version": "default", "mode": "simple", "param_InstanceId": [world.web1], "submit": "1",
        "justification": "leak", "previewed": preview.context["preview"].fingerprint})
    assert submit.status_code == 302
    assert f"web-1 ({world.web1})" in client.get("/requests/").content.decode()  # My requests
    for text in ("restart", "RESTART", "RestartEC2"):
        rows = client.get("/runbooks/", {"q": text}).context["rows"]
        assert [row["runbook"].name for row in rows] == ["AWS-RestartEC2Instance"], text


def test_the_audit_filters_keep_the_results_near_the_top_on_a_phone(world, client):
    """Four everyday filters show; the rest fold into "More filters", open when one of them is set."""
    client.force_login(world.carol)
    html = client.get("/audit/").content.decode()
    more = html[html.index('<details class="more-filters"'):html.index("</details>")]
    assert more.startswith('<details class="more-filters">')  # closed
    for name in ("team", "request", "account_id", "region", "since", "until", "aws_request_id"):
        assert f'name="{name}"' in more, name
    for name in ("actor", "action_prefix", "runbook", "resource"):
        assert f'name="{name}"' in html and f'name="{name}"' not in more, name
    opened = client.get("/audit/", {"region": "eu-west-1"}).content.decode()
    assert '<details class="more-filters" open>' in opened


class TestNamesInExports:
    """CSV and JSON Lines carry resource_names ({id: Name tag}) for each event's resources, from the
    names stored with its request at submit; both export paths (COPY on PostgreSQL, Python) agree."""

    @staticmethod
    def _export(client, fmt: str) -> str:
        response = client.get("/api/v1/audit/export/", {"format": fmt})
        assert response.status_code == 200
        return b"".join(c if isinstance(c, bytes) else c.encode() for c in response.streaming_content).decode()

    def _check(self, world, submit, monkeypatch, fast: bool):
        import csv
        import io
        import json

        from rest_framework.test import APIClient

        from automations.audit import search as audit_search

        monkeypatch.setattr(audit_search, "_pg_fast_path", lambda: fast)
        both = submit(parameters={"InstanceId": [world.web1]})
        services.request_approve(request=both, actor=world.bob)
        auditor = APIClient()
        auditor.force_authenticate(world.carol)
        lines = [json.loads(line) for line in self._export(auditor, "jsonl").splitlines()]
        about = [line for line in lines if line["request_id"] == both.pk and line["resources"]]
        assert about and all(line["resource_names"] == {world.web1: "web-1"} for line in about)
        assert all(line["resource_names"] is None for line in lines if line["request_id"] is None)
        rows = list(csv.DictReader(io.StringIO(self._export(auditor, "csv"))))
        about = [row for row in rows if row["request_id"] == str(both.pk) and row["resources"] != "[]"]
        assert about and all(json.loads(row["resource_names"]) == {world.web1: "web-1"} for row in about)
        assert all(row["resource_names"] == "" for row in rows if row["request_id"] == "")

    def test_python_path(self, world, submit, monkeypatch):
        self._check(world, submit, monkeypatch, fast=False)

    def test_postgresql_copy_path(self, world, submit, monkeypatch):
        from tests.conftest import require_postgres

        require_postgres("the COPY export path")
        self._check(world, submit, monkeypatch, fast=True)
