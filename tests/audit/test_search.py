"""Auditor search (every filter, cursor pages, UI pages) and exports (CSV guard, JSON Lines, constant memory)."""
import csv
import datetime as dt
import io
import json
import re
import tracemalloc

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from automations.audit.search import AuditEventFilter, export_csv, export_jsonl
from automations.models import AuditEvent
from tests.audit_helpers import seed_chain

T0 = timezone.now().replace(microsecond=0) - dt.timedelta(days=10)


def varied(i: int) -> dict:
    """A deterministic mix: 3 actors, 2 teams, 2 runbooks, 4 resources, 2 accounts x 2 regions, 3 actions."""
    return {
        "actor_name": ["alice", "bob", "dave"][i % 3],
        "actor_id": [101, 102, 103][i % 3],
        "team": ["platform", "data"][i % 2],
        "runbook": ["AWS-RestartEC2Instance", "AWS-StopEC2Instance"][(i // 2) % 2],
        "resources": [f"i-{i % 4:017x}"] + (["i-00000000000000fff"] if i % 5 == 0 else []),
        "account_id": ["111111111111", "222222222222"][(i // 3) % 2],
        "region": ["eu-west-1", "us-east-1"][(i // 4) % 2],
        "action": ["request.submitted", "request.approved", "dispatch.started"][(i // 5) % 3],
        "request_id": 1000 + i // 6,
        "aws_request_id": f"req-{i}" if i % 7 == 0 else "",
        "execution_id": f"{i:036d}" if i % 11 == 0 else "",
    }


@pytest.fixture
def seeded(db):
    events = seed_chain(60, varied, start=T0, step=dt.timedelta(hours=1))
    return events


@pytest.fixture
def auditor(world):
    api = APIClient()
    api.force_authenticate(world.carol)
    return api


def api_sequences(api, **params) -> list[int]:
    """Every page of /api/v1/audit/ (following `next`), as sequence numbers."""
    found, url, query = [], "/api/v1/audit/", {**params, "limit": 7}
    while url:
        response = api.get(url, query)
        assert response.status_code == 200, response.content
        body = response.json()
        assert "count" not in body  # no COUNT(*) behind the page
        found += [row["sequence"] for row in body["results"]]
        url, query = body["next"], None
    return found


def expected(events, predicate) -> list[int]:
    return [e.sequence for e in reversed(events) if predicate(e)]


CASES = [
    ({"actor": "bob"}, lambda e: e.actor_name == "bob"),
    ({"actor_id": "103"}, lambda e: e.actor_id == 103),
    ({"action": "request.approved"}, lambda e: e.action == "request.approved"),
    ({"action_prefix": "request."}, lambda e: e.action.startswith("request.")),
    ({"team": "data"}, lambda e: e.team == "data"),
    ({"runbook": "AWS-StopEC2Instance"}, lambda e: e.runbook == "AWS-StopEC2Instance"),
    ({"resource": "i-00000000000000fff"}, lambda e: "i-00000000000000fff" in e.resources),
    ({"resource": f"i-{2:017x}"}, lambda e: f"i-{2:017x}" in e.resources),
    ({"account_id": "222222222222", "region": "us-east-1"},
     lambda e: e.account_id == "222222222222" and e.region == "us-east-1"),
    ({"request": "1003"}, lambda e: e.request_id == 1003),
    ({"aws_request_id": "req-14"}, lambda e: e.aws_request_id == "req-14"),
    ({"execution_id": f"{22:036d}"}, lambda e: e.execution_id == f"{22:036d}"),
    ({"since": (T0 + dt.timedelta(hours=20)).isoformat(), "until": (T0 + dt.timedelta(hours=41)).isoformat()},
     lambda e: T0 + dt.timedelta(hours=20) <= e.occurred_at < T0 + dt.timedelta(hours=41)),
    ({"team": "platform", "actor": "alice", "since": (T0 + dt.timedelta(hours=30)).isoformat()},
     lambda e: e.team == "platform" and e.actor_name == "alice" and e.occurred_at >= T0 + dt.timedelta(hours=30)),
    ({"since": (T0 + dt.timedelta(days=30)).isoformat()}, lambda e: False),
]


class TestApiSearch:
    @pytest.mark.parametrize("params, predicate", CASES, ids=[",".join(c[0]) for c in CASES])
    def test_filters_with_cursor_pages(self, seeded, auditor, params, predicate):
        want = expected(seeded, predicate)
        assert api_sequences(auditor, **params) == want
        if params != {"since": (T0 + dt.timedelta(days=30)).isoformat()}:
            assert want  # the case exercises something

    def test_rows_match_the_documented_serializer(self, seeded, auditor):
        from rest_framework.renderers import JSONRenderer

        from automations.api.serializers import AuditEventSerializer

        seed_chain(1, lambda i: {"client_ip": "2001:db8::5", "details": {"nested": {"a": [1, "b"]}}})
        row = auditor.get("/api/v1/audit/", {"limit": 1}).json()["results"][0]
        event = AuditEvent.objects.get(sequence=row["sequence"])
        assert row == json.loads(JSONRenderer().render(AuditEventSerializer(event).data))

    def test_cursor_pages_are_stable_while_events_arrive(self, seeded, auditor):
        first = auditor.get("/api/v1/audit/", {"limit": 10}).json()
        seed_chain(5)  # newer events must not shift the next page
        second = auditor.get(first["next"]).json()
        assert [row["sequence"] for row in second["results"]] == list(range(50, 40, -1))
        back = auditor.get(second["previous"]).json()
        assert [row["sequence"] for row in back["results"]] == list(range(60, 50, -1))

    def test_bad_input_is_a_clean_400(self, seeded, auditor):
        for params in ({"request": "abc"}, {"request": "1.5"}, {"request": str(2**70)}, {"since": "yesterday"},
                       {"actor": "x" * 151}, {"cursor": "cD1hYmM="}):
            response = auditor.get("/api/v1/audit/", params)
            assert response.status_code == 400, (params, response.content)
            assert response.json()["code"] in ("invalid", "invalid_cursor")
        assert not AuditEvent.objects.filter(action="authz.denied").exists()

    def test_scope_auditor_lead_member(self, world, seeded):
        lead, member = APIClient(), APIClient()
        lead.force_authenticate(world.bob)  # leads platform
        member.force_authenticate(world.dave)
        assert {row["team"] for row in lead.get("/api/v1/audit/", {"limit": 500}).json()["results"]} == {"platform"}
        assert member.get("/api/v1/audit/").json()["results"] == []  # dave acted in none of these


class TestPages:
    def test_ui_search_and_keyset_paging(self, world, seeded, client):
        seed_chain(70, varied)  # 130 events: three pages of 50
        client.force_login(world.carol)
        seen, url = [], "/audit/?team=platform"
        while url:
            page = client.get(url)
            assert page.status_code == 200
            html = page.content.decode()
            seen += [int(n) for n in re.findall(r'href="/audit/events/(\d+)/"', html)]
            older = re.search(r'href="\?([^"]*before=\d+)" rel="next"', html)
            url = "/audit/?" + older.group(1).replace("&amp;", "&") if older else None
        platform = list(AuditEvent.objects.filter(team="platform").order_by("-sequence").values_list("sequence", flat=True))
        assert seen == platform and len(seen) == 65
        newer = client.get(f"/audit/?team=platform&after={platform[-1]}").content.decode()
        assert [int(n) for n in re.findall(r'href="/audit/events/(\d+)/"', newer)] == platform[-51:-1]

    def test_non_auditors_are_refused_and_audited(self, world, client):
        client.force_login(world.alice)
        for path in ("/audit/", "/audit/events/1/", "/audit/requests/1/", "/audit/resources/i-1/"):
            assert client.get(path).status_code == 403
        assert AuditEvent.objects.filter(action="authz.denied", actor_name="alice", details__status=403).count() == 4


class TestExport:
    def _get(self, api, **params):
        response = api.get("/api/v1/audit/export/", params)
        assert response.status_code == 200, getattr(response, "content", b"")[:500]
        assert response.streaming
        return b"".join(response.streaming_content).decode()

    def test_csv_with_formula_guard(self, world, auditor):
        seed_chain(3, lambda i: {"actor_name": ["=HYPERLINK(\"http://x\")", "+1", "@SUM(A1)"][i],
                                 "user_agent": "-2+3", "details": {"note": "=cmd|' /C calc'!A0"}})
        rows = list(csv.reader(io.StringIO(self._get(auditor, format="csv"))))
        header, body = rows[0], rows[1:]
        assert header[:5] == ["sequence", "occurred_at", "actor_id", "actor_name", "action"]
        assert [row[3] for row in body] == ["'=HYPERLINK(\"http://x\")", "'+1", "'@SUM(A1)"]
        assert {row[header.index("user_agent")] for row in body} == {"'-2+3"}
        assert json.loads(body[0][header.index("details")]) == {"note": "=cmd|' /C calc'!A0"}  # JSON, starts with {
        assert all(cell[:1] not in "=+-@" for row in body for cell in row if cell)

    def test_jsonl_every_field_and_the_export_is_audited(self, world, seeded, auditor, settings):
        settings.TRUSTED_PROXY_COUNT = 0
        text = self._get(auditor, format="jsonl", team="data", actor="bob")
        lines = [json.loads(line) for line in text.splitlines()]
        want = [e for e in seeded if e.team == "data" and e.actor_name == "bob"]
        assert [line["sequence"] for line in lines] == [e.sequence for e in want]
        first = lines[0]
        assert set(first) == {"sequence", "occurred_at", "actor_id", "actor_name", "action", "request_id", "team",
                              "runbook", "resources", "account_id", "region", "details", "client_ip", "user_agent",
                              "role_session_name", "source_identity", "aws_request_id", "execution_id",
                              "prev_hash", "hash", "resource_names"}
        assert first["hash"] == want[0].hash and first["resources"] == want[0].resources
        exported = AuditEvent.objects.get(action="audit.exported")
        assert exported.actor_id == world.carol.pk and exported.actor_name == "carol"
        assert exported.details == {"format": "jsonl", "filters": {"team": "data", "actor": "bob"}}
        assert exported.client_ip == "127.0.0.1"
        # The export covers what came before it: its own event is not in the file.
        all_lines = self._get(auditor, format="jsonl").splitlines()
        assert json.loads(all_lines[-1])["sequence"] == exported.sequence  # the first export, seen by the second
        assert AuditEvent.objects.filter(action="audit.exported").count() == 2

    def test_bad_format_or_filter_is_400_and_not_exported(self, seeded, auditor):
        assert auditor.get("/api/v1/audit/export/", {"format": "xlsx"}).status_code == 400
        assert auditor.get("/api/v1/audit/export/", {"format": "csv", "request": "x"}).status_code == 400
        assert not AuditEvent.objects.filter(action="audit.exported").exists()

    def test_export_memory_does_not_grow_with_rows(self, db):
        seed_chain(6000, lambda i: {"details": {"note": "x" * 100, "i": i}, "resources": [f"i-{i:017x}"]})

        def peak(fn, limit):
            queryset = AuditEventFilter({}, queryset=AuditEvent.objects.filter(sequence__lte=limit)).qs
            tracemalloc.start()
            size = sum(len(chunk) for chunk in fn(queryset))
            _, high = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            return size, high

        for fn in (export_csv, export_jsonl):
            small_bytes, small_peak = peak(fn, 2000)  # one cursor chunk
            big_bytes, big_peak = peak(fn, 6000)  # three
            assert big_bytes > 2.5 * small_bytes
            # Three times the rows, about the same peak: one cursor chunk and one output batch at a time.
            assert big_peak < small_peak * 1.5 + 512 * 1024, (fn.__name__, small_peak, big_peak)


NASTY = ["back\\slash \\\" \\n", 'quote " and \'', "line\nbreak\r\ncr", "tab\there", "\ttab-first", "\rcr-first",
         "ünïcödé ✓ 🚀", "del\x7fchar", "bell\x07", "=1+1", "-1", "@x", "+y", "", "plain"]


def nasty(i: int) -> dict:
    text = NASTY[i % len(NASTY)]
    return {"actor_name": text, "action": f"a.{i}", "team": text[:64], "runbook": text, "resources": [text, "i-1"],
            "details": {text: [text, i, None, True, 1.5], "nested": {"k": text}}, "user_agent": text,
            "role_session_name": text[:64], "client_ip": ["192.0.2.1", "2001:db8::1", None][i % 3]}


class TestExportFormats:
    """PostgreSQL's COPY path and the Python path (SQLite demo) write the same data, hostile text included."""

    @pytest.fixture
    def both(self, db, monkeypatch):
        from automations.audit import search as audit_search

        seed_chain(len(NASTY) * 2, nasty)
        queryset = AuditEvent.objects.all()

        def run(fn, fast: bool):
            monkeypatch.setattr(audit_search, "_pg_fast_path", lambda: fast)
            out = b"".join(chunk if isinstance(chunk, bytes) else chunk.encode() for chunk in fn(queryset))
            return out.decode()

        return run

    def test_jsonl_paths_agree_and_round_trip(self, both):
        require_pg()
        fast = [json.loads(line) for line in both(export_jsonl, True).splitlines()]
        slow = [json.loads(line) for line in both(export_jsonl, False).splitlines()]
        assert fast == slow
        stored = {e.sequence: e for e in AuditEvent.objects.all()}
        for line in fast:
            event = stored[line["sequence"]]
            assert (line["actor_name"], line["runbook"], line["resources"], line["details"], line["client_ip"]) == \
                   (event.actor_name, event.runbook, event.resources, event.details, event.client_ip)
            assert line["occurred_at"] == event.occurred_at.isoformat(timespec="microseconds")

    def test_csv_paths_agree_and_defuse_formulas(self, both):
        require_pg()
        fast = list(csv.reader(io.StringIO(both(export_csv, True))))
        slow = list(csv.reader(io.StringIO(both(export_csv, False))))
        assert fast[0] == slow[0] and len(fast) == len(slow) == len(NASTY) * 2 + 1
        json_columns = {fast[0].index("resources"), fast[0].index("details")}
        for fast_row, slow_row in zip(fast[1:], slow[1:]):
            for column, (a, b) in enumerate(zip(fast_row, slow_row)):
                assert (json.loads(a) == json.loads(b)) if column in json_columns else (a == b), (fast[0][column], a, b)
        names = [row[fast[0].index("actor_name")] for row in fast[1:]]
        assert "'=1+1" in names and "'-1" in names and "'@x" in names and "'+y" in names
        assert "'\ttab-first" in names and "'\rcr-first" in names

    def test_a_client_that_goes_away_leaves_the_connection_usable(self, seeded):
        for fn in (export_csv, export_jsonl):
            stream = fn(AuditEvent.objects.all())
            next(stream)
            stream.close()
            assert AuditEvent.objects.count() == 60


def require_pg():
    from tests.conftest import require_postgres

    require_postgres("the COPY export path")
