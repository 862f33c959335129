"""The audit chain at its edges: each test here was written against a mutant of automations/audit/chain.py
that survived the mutation run (docs/testing.md names the mutant each one kills).

record() defaults and clipping, check_chain's report and reasons, and the client address behind a proxy.
"""
from types import SimpleNamespace

from django.db import transaction
from django.utils import timezone

from automations import audit
from automations.audit import ClientInfo, check_chain, verify_chain
from automations.audit.chain import chain_rows
from automations.audit.guards import TABLE
from automations.models import AuditEvent
from tests.audit_helpers import guards_bypassed, seed_chain, sql


def recorded(**kwargs) -> AuditEvent:
    with transaction.atomic():
        event = audit.record(action=kwargs.pop("action", "test.event"), actor=kwargs.pop("actor", None), **kwargs)
    return AuditEvent.objects.get(pk=event.pk)


class TestRecord:
    def test_an_event_without_a_request_has_no_runbook_or_region(self, db):
        # x_record__mutmut_2 and _4 (the defaults of runbook and region).
        event = recorded(team="platform")
        assert (event.team, event.runbook, event.region, event.account_id) == ("platform", "", "", "")

    def test_each_resource_is_clipped_to_256_characters(self, db):
        # x_record__mutmut_116 (clean_text without the limit).
        event = recorded(resources=["i-" + "9" * 400, "i-short"])
        assert event.resources == ["i-" + "9" * 254, "i-short"]
        assert verify_chain() is None

    def test_an_aws_answer_without_some_names_records_them_empty(self, db):
        # x_record__mutmut_42 and _81 (getattr without a default raises for a missing name).
        event = recorded(aws=SimpleNamespace(aws_request_id="req-1"))
        assert event.aws_request_id == "req-1"
        assert (event.role_session_name, event.source_identity, event.execution_id) == ("", "", "")


class TestCheckChain:
    def test_the_report_counts_every_event_it_checked(self, db):
        # x_check_chain__mutmut_55 (`checked = 1`).
        events = seed_chain(5)
        report = check_chain()
        assert (report.problem, report.checked, report.first_sequence, report.last_sequence) == (None, 5, 1, 5)
        assert report.last_hash == events[-1].hash
        assert check_chain(start=2, end=4).checked == 3

    def test_a_first_event_that_does_not_start_from_genesis_is_caught(self, db):
        # x_check_chain__mutmut_7 (no genesis anchor for a check from the start): a chain rebuilt on
        # top of a cut-off front hashes correctly event by event, but its first event's prev_hash
        # is not the genesis hash.
        event = AuditEvent(sequence=1, occurred_at=timezone.now(), prev_hash="a" * 64,
                           actor_name="forger", action="seed.event", details={})
        event.hash = audit.compute_hash(event.prev_hash, audit.chained_fields(event))
        AuditEvent.objects.bulk_create([event])
        problem = verify_chain()
        assert (problem.sequence, problem.reason) == (1, "prev_hash does not match the anchor hash")

    def test_a_missing_first_event_of_a_range_is_named_with_what_came_next(self, db):
        # x_check_chain__mutmut_8 (no expected sequence) and _24 (no reason).
        seed_chain(6)
        with guards_bypassed():
            sql(f"DELETE FROM {TABLE} WHERE sequence = 3")
        problem = verify_chain(start=3, end=5)
        assert (problem.sequence, problem.reason) == (3, "event 3 is missing (next found: 4)")

    def test_an_edited_event_is_named_as_edited(self, db):
        # x_check_chain__mutmut_51 (the reason's wording: it is what verify_audit prints).
        seed_chain(3)
        with guards_bypassed():
            sql(f"UPDATE {TABLE} SET actor_name = 'someone-else' WHERE sequence = 2")
        problem = verify_chain()
        assert (problem.sequence, problem.reason) == (2, "content does not match its hash (the event was edited)")


    def test_every_event_is_read_past_the_first_chunk_and_past_the_125th(self, db):
        # PostgreSQL's reader: x__pg_chain_rows__mutmut_15 (the open end read as 2 * 63 - 1 = 125) and
        # _43 (the keyset cursor lost after the first chunk) both verified only the front of the chain
        # and called the rest intact (measured on PostgreSQL, docs/testing.md).
        seed_chain(130)
        assert [fields["sequence"] for fields, _, _ in chain_rows(None, None, chunk_size=7)] == list(range(1, 131))
        with guards_bypassed():
            sql(f"UPDATE {TABLE} SET actor_name = 'someone-else' WHERE sequence = 130")
        assert verify_chain().sequence == 130


class TestClientInfo:
    def test_behind_a_proxy_without_forwarded_for_the_peer_address_stands(self, rf, settings):
        # xǁClientInfoǁfrom_request__mutmut_14 (a made-up header value when there is none).
        settings.TRUSTED_PROXY_COUNT = 1
        assert ClientInfo.from_request(rf.get("/", REMOTE_ADDR="192.0.2.7")).ip == "192.0.2.7"
