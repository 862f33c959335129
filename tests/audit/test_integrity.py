"""Append-only at three levels, and tamper evidence: the chain, the signed digests, archives (matrix rows 27-28)."""
import json
import os

import pytest
from django.db import DatabaseError, transaction

from automations import audit
from automations.audit import archive as audit_archive
from automations.audit import digests as audit_digests
from automations.audit import signing as audit_signing
from automations.audit.guards import TABLE
from automations.models import AuditEvent, AuditLogIsAppendOnly
from tests.audit_helpers import row_trigger_disabled, seed_chain, sql, verify
from tests.conftest import require_postgres

pytestmark = pytest.mark.django_db

HMAC_KEY = "hmac-sha256:" + "k" * 40


@pytest.fixture
def postgres():
    require_postgres("audit triggers")


@pytest.fixture
def ed25519_key():
    private, public = audit_signing.generate_ed25519_key()
    return private, public


@pytest.fixture
def digests(settings, tmp_path, ed25519_key):
    """Digests on, signed with a fresh Ed25519 key, into a temporary directory."""
    settings.DELEGATE_AUDIT_DIGEST_KEY = ed25519_key[0]
    settings.DELEGATE_AUDIT_DIGEST_DIR = str(tmp_path / "digests")
    return tmp_path / "digests"


def refused(statement: str, params=()) -> str:
    """Run SQL in a savepoint; return the database's refusal message (the test fails if it succeeds)."""
    with pytest.raises(DatabaseError) as error, transaction.atomic():
        sql(statement, params)
    return str(error.value)


class TestAppendOnly:
    def test_database_refuses_update_delete_and_truncate(self, postgres):
        seed_chain(3)
        assert "append-only: UPDATE refused" in refused(f"UPDATE {TABLE} SET details = '{{}}' WHERE sequence = 2")
        assert "append-only: DELETE refused" in refused(f"DELETE FROM {TABLE} WHERE sequence = 3")
        assert "append-only: TRUNCATE refused" in refused(f"TRUNCATE {TABLE}")
        # Django's own bulk paths reach the same trigger when the queryset guard is bypassed.
        assert "append-only" in refused(f"UPDATE {TABLE} SET sequence = sequence + 100")
        assert AuditEvent.objects.count() == 3
        assert audit.verify_chain() is None

    def test_model_and_queryset_refuse(self):
        event = seed_chain(1)[0]
        event = AuditEvent.objects.get(pk=event.pk)
        event.details = {"edited": True}
        with pytest.raises(AuditLogIsAppendOnly):
            event.save()
        with pytest.raises(AuditLogIsAppendOnly):
            event.delete()
        with pytest.raises(AuditLogIsAppendOnly):
            AuditEvent.objects.filter(pk=event.pk).update(details={})
        with pytest.raises(AuditLogIsAppendOnly):
            AuditEvent.objects.all().delete()
        with pytest.raises(AuditLogIsAppendOnly):
            AuditEvent.objects.bulk_update([event], ["details"])
        assert AuditEvent.objects.get(pk=event.pk).details == {"i": 0}

    def test_admin_refuses_add_change_and_delete(self, client, django_user_model):
        event = seed_chain(1)[0]
        admin_user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests")
        client.force_login(admin_user)
        base = "/admin/automations/auditevent/"
        assert client.get(f"{base}add/").status_code == 403
        assert client.post(f"{base}{event.pk}/delete/", {"post": "yes"}).status_code == 403
        change = client.post(f"{base}{event.pk}/change/", {"action": "hacked"})
        assert change.status_code == 403 or AuditEvent.objects.get(pk=event.pk).action == "seed.event"
        changelist = client.get(base)
        assert changelist.status_code == 200
        assert b"delete_selected" not in changelist.content
        assert AuditEvent.objects.filter(action="seed.event").count() == 1


class TestChainTampering:
    """With the trigger disabled (a superuser), edits, deletions and reordering are still caught."""

    def test_intact_chain_passes_full_and_range(self, postgres):
        seed_chain(10)
        assert verify("--no-digests")[0] == 0
        code, out, _ = verify("--no-digests", "--from", "4", "--to", "7")
        assert code == 0 and "events 4..7 (4) verified" in out

    def test_edited_row_is_named(self, postgres):
        seed_chain(10)
        with row_trigger_disabled():
            sql(f"UPDATE {TABLE} SET details = '{{\"i\": 999}}' WHERE sequence = 5")
        code, _, err = verify("--no-digests")
        assert code == 1
        assert "first bad event is sequence 5" in err and "edited" in err

    def test_edited_actor_name_or_ip_is_named(self, postgres):
        seed_chain(6, lambda i: {"actor_name": "alice", "client_ip": "192.0.2.10"})
        with row_trigger_disabled():
            sql(f"UPDATE {TABLE} SET client_ip = '198.51.100.1' WHERE sequence = 3")
        assert "sequence 3" in verify("--no-digests")[2]

    def test_deleted_row_is_named(self, postgres):
        seed_chain(10)
        with row_trigger_disabled():
            sql(f"DELETE FROM {TABLE} WHERE sequence = 5")
        code, _, err = verify("--no-digests")
        assert code == 1 and "first bad event is sequence 5" in err and "missing" in err

    def test_deleted_oldest_rows_are_named(self, postgres):
        seed_chain(10)
        with row_trigger_disabled():
            sql(f"DELETE FROM {TABLE} WHERE sequence <= 2")
        code, _, err = verify("--no-digests")
        assert code == 1 and "first bad event is sequence 1" in err

    def test_reordered_rows_are_named(self, postgres):
        seed_chain(10)
        with row_trigger_disabled():
            sql(f"UPDATE {TABLE} SET sequence = -4 WHERE sequence = 4")
            sql(f"UPDATE {TABLE} SET sequence = 4 WHERE sequence = 6")
            sql(f"UPDATE {TABLE} SET sequence = 6 WHERE sequence = -4")
        code, _, err = verify("--no-digests")
        assert code == 1 and "first bad event is sequence 4" in err

    def test_reordered_timestamps_are_named(self, postgres):
        seed_chain(10)
        with row_trigger_disabled():
            sql(f"UPDATE {TABLE} a SET occurred_at = b.occurred_at FROM {TABLE} b WHERE a.sequence = 7 AND b.sequence = 2")
        assert "first bad event is sequence 7" in verify("--no-digests")[2]

    def test_range_check_trusts_its_start_unless_anchored(self, postgres):
        events = seed_chain(10)
        with row_trigger_disabled():
            sql(f"UPDATE {TABLE} SET details = '{{}}' WHERE sequence = 2")
        assert verify("--no-digests", "--from", "4")[0] == 0  # outside the range
        assert "sequence 2" in verify("--no-digests", "--from", "1")[2]
        assert verify("--no-digests", "--from", "4", "--anchor", events[2].hash)[0] == 0
        code, _, err = verify("--no-digests", "--from", "4", "--anchor", "f" * 64)
        assert code == 1 and "sequence 4" in err and "anchor" in err


class TestDigests:
    def test_digest_pins_head_signed_and_chained(self, postgres, digests, ed25519_key):
        seed_chain(5)
        first = audit_digests.write_digest()
        assert audit_digests.write_digest() is None  # nothing new: no empty digests
        seed_chain(3)
        second = audit_digests.write_digest()
        one, two = audit_digests.load(first), audit_digests.load(second)
        assert (one["number"], one["first_sequence"], one["last_sequence"]) == (1, 1, 5)
        assert (two["number"], two["first_sequence"], two["last_sequence"]) == (2, 6, 8)
        assert two["previous_signature"] == one["signature"]
        assert two["last_hash"] == AuditEvent.objects.get(sequence=8).hash
        assert one["algorithm"] == "ed25519"
        assert oct(os.stat(first).st_mode & 0o777) == "0o444"
        code, out, _ = verify()
        assert code == 0 and "digests: 2 verified" in out
        # An auditor's machine needs only the public key.
        code, out, _ = verify("--public-key", ed25519_key[1], "--digest-dir", str(digests))
        assert code == 0 and "2 verified" in out

    def test_deleting_the_newest_events_is_caught(self, postgres, digests):
        seed_chain(10)
        audit_digests.write_digest()
        assert verify()[0] == 0
        with row_trigger_disabled():
            sql(f"DELETE FROM {TABLE} WHERE sequence > 7")
        assert verify("--no-digests")[0] == 0  # the chain alone cannot see it
        code, _, err = verify()
        assert code == 1
        assert "first bad event is sequence 8" in err and "newest events were deleted" in err

    def test_deleting_everything_is_caught(self, postgres, digests):
        seed_chain(4)
        audit_digests.write_digest()
        with row_trigger_disabled():
            sql(f"DELETE FROM {TABLE}")
        code, _, err = verify()
        assert code == 1 and "sequence 1" in err

    def test_a_rewritten_chain_is_caught_by_the_digest(self, postgres, digests):
        seed_chain(10)
        audit_digests.write_digest()
        # A privileged attacker edits event 4 and recomputes every later hash: the chain holds.
        with row_trigger_disabled():
            prev = AuditEvent.objects.get(sequence=3).hash
            for event in AuditEvent.objects.filter(sequence__gte=4).order_by("sequence"):
                if event.sequence == 4:
                    event.details = {"i": "rewritten"}
                new_hash = audit.compute_hash(prev, audit.chained_fields(event))
                sql(f"UPDATE {TABLE} SET details = %s, prev_hash = %s, hash = %s WHERE id = %s",
                    [json.dumps(event.details), prev, new_hash, event.pk])
                prev = new_hash
        assert verify("--no-digests")[0] == 0
        code, _, err = verify()
        assert code == 1 and "sequence 10" in err and "rewritten between events 1 and 10" in err

    def test_writer_refuses_to_vouch_for_tampering(self, postgres, digests):
        seed_chain(5)
        audit_digests.write_digest()
        seed_chain(5)
        with row_trigger_disabled():
            sql(f"UPDATE {TABLE} SET action = 'nothing.happened' WHERE sequence = 7")
        with pytest.raises(audit_signing.DigestError, match="sequence 7"):
            audit_digests.write_digest()

    def test_deleted_or_altered_digest_files_are_caught(self, postgres, digests):
        paths = []
        for _ in range(3):
            seed_chain(2)
            paths.append(audit_digests.write_digest())
        os.chmod(paths[1], 0o644)
        altered = audit_digests.load(paths[1])
        altered["last_sequence"] = 3
        paths[1].write_text(json.dumps(altered))
        code, _, err = verify()
        assert code == 1 and "invalid signature" in err
        paths[1].unlink()
        code, _, err = verify()
        assert code == 1 and "digest 2 is missing" in err and "sequence 3" in err

    def test_another_key_is_refused(self, postgres, digests, settings):
        seed_chain(2)
        audit_digests.write_digest()
        settings.DELEGATE_AUDIT_DIGEST_KEY = HMAC_KEY
        code, _, err = verify()
        assert code == 1 and "not a trusted key" in err

    def test_key_rotation_keeps_old_digests_verifiable(self, postgres, digests, settings, ed25519_key):
        seed_chain(3)
        audit_digests.write_digest()
        new_private, _ = audit_signing.generate_ed25519_key()
        settings.DELEGATE_AUDIT_DIGEST_KEY = new_private
        seed_chain(3)
        second = audit_digests.load(audit_digests.write_digest())
        assert second["previous_signature"] and second["key_id"] != audit_signing.signer_from(ed25519_key[0]).key_id
        assert "not a trusted key" in verify()[2]
        code, out, _ = verify("--public-key", ed25519_key[1])
        assert code == 0 and "2 verified" in out

    def test_hmac_keys_work_and_bad_keys_are_refused(self, postgres, settings, tmp_path):
        from django.core.exceptions import ImproperlyConfigured

        settings.DELEGATE_AUDIT_DIGEST_KEY = HMAC_KEY
        settings.DELEGATE_AUDIT_DIGEST_DIR = str(tmp_path)
        seed_chain(2)
        assert audit_digests.load(audit_digests.write_digest())["algorithm"] == "hmac-sha256"
        assert verify()[0] == 0
        for bad in ("hmac-sha256:short", "rsa:abc", "ed25519:not-base64!"):
            with pytest.raises(ImproperlyConfigured):
                audit_signing.signer_from(bad)

    def test_without_a_key_the_task_skips_and_verify_says_so(self, settings):
        from automations import tasks

        settings.DELEGATE_AUDIT_DIGEST_KEY = ""
        seed_chain(2)
        assert tasks.write_audit_digest() == 0
        code, out, _ = verify()
        assert code == 0 and "cannot be detected" in out
        with pytest.raises(Exception, match="no digest key"):
            verify("--require-digests")

    def test_the_beat_task_writes_a_digest(self, postgres, digests):
        from automations import tasks

        seed_chain(3)
        assert tasks.write_audit_digest() == 1
        assert tasks.write_audit_digest() == 0


class TestArchive:
    def _purge(self, first, last):
        with row_trigger_disabled():
            sql(f"DELETE FROM {TABLE} WHERE sequence BETWEEN %s AND %s", [first, last])

    def test_archive_then_purge_keeps_the_remaining_chain_verifiable(self, postgres, digests, tmp_path):
        seed_chain(20)
        result = audit_archive.archive(through=12, out_dir=tmp_path / "archive", signer=audit_signing.configured_signer())
        manifest = result.manifest
        assert (manifest["first_sequence"], manifest["last_sequence"], manifest["event_count"]) == (1, 12, 12)
        assert manifest["last_hash"] == AuditEvent.objects.get(sequence=12).hash
        assert manifest["digests"] and manifest["digests"][-1]["last_sequence"] >= 12
        lines = (tmp_path / "archive" / manifest["file"]).read_bytes().splitlines()
        assert len(lines) == 12 and json.loads(lines[0])["sequence"] == 1
        assert result.event.action == "audit.archived" and result.event.details["last_sequence"] == 12
        assert "DELETE FROM automations_auditevent WHERE sequence BETWEEN 1 AND 12" in result.purge_sql

        self._purge(1, 12)
        code, out, _ = verify()
        assert code == 0, out
        assert "events 13..21" in out and "signed archive manifest" in out
        code, out, _ = verify("--archive", str(result.manifest_path))
        assert code == 0 and "archive" in out and "events 1..12 verified" in out

        # Removing one more event is still caught, at its sequence number.
        self._purge(13, 13)
        code, _, err = verify()
        assert code == 1 and "first bad event is sequence 13" in err and "events 13..13 are missing" in err

    def test_a_tampered_archive_file_is_caught(self, postgres, digests, tmp_path):
        seed_chain(8)
        result = audit_archive.archive(through=5, out_dir=tmp_path, signer=audit_signing.configured_signer())
        data = tmp_path / result.manifest["file"]
        data.write_bytes(data.read_bytes().replace(b'"i":2', b'"i":7'))
        code, _, err = verify("--archive", str(result.manifest_path))
        assert code == 1 and "SHA-256" in err

    def test_archive_refuses_open_ranges_and_overwrites(self, postgres, digests, tmp_path):
        seed_chain(5)
        signer = audit_signing.configured_signer()
        with pytest.raises(audit_archive.ArchiveError, match="closed range"):
            audit_archive.archive(through=5, out_dir=tmp_path, signer=signer)
        audit_archive.archive(through=2, out_dir=tmp_path, signer=signer)
        with pytest.raises(audit_archive.ArchiveError, match="never overwritten"):
            audit_archive.archive(through=2, out_dir=tmp_path, signer=signer)

    def test_archive_command_by_time(self, postgres, digests, tmp_path):
        import datetime as dt

        from django.core.management import call_command
        from django.utils import timezone

        seed_chain(6, start=timezone.now() - dt.timedelta(days=400), step=dt.timedelta(days=30))
        seed_chain(2)
        cutoff = (timezone.now() - dt.timedelta(days=250)).isoformat()
        call_command("archive_audit", "--before", cutoff, "--out", str(tmp_path))
        manifest = json.loads(next(tmp_path.glob("*.manifest.json")).read_text())
        assert manifest["last_sequence"] == AuditEvent.objects.filter(occurred_at__lt=cutoff).order_by("-sequence")[0].sequence


class TestRecordHostileInput:
    def test_nul_surrogates_and_overlong_values_never_break_the_write(self):
        from automations.audit import ClientInfo

        with transaction.atomic():
            event = audit.record(
                action="x" * 100, actor=None, actor_name="n\x00ame" + "y" * 200, team="t\ud800eam",
                runbook="r" * 1000, resources=["i-\x00"] * 600, region="r\x00",
                client=ClientInfo(ip="192.0.2.1", user_agent="ua\x00\ud83d" + "z" * 1000),
                details={"k\x00ey": ["v\x00", "\udfff", ("tuple", "\ud800")], 3: {"nested\x00": "\x00"}},
            )
        stored = AuditEvent.objects.get(pk=event.pk)
        assert len(stored.action) == 60 and len(stored.actor_name) == 150 and len(stored.user_agent) == 512
        assert "\x00" not in stored.actor_name and stored.team == "t?eam"
        assert len(stored.resources) == 500 and stored.resources[0] == "i-\ufffd"
        assert stored.details == {"k\ufffdey": ["v\ufffd", "?", ["tuple", "?"]], "3": {"nested\ufffd": "\ufffd"}}
        assert audit.verify_chain() is None

    def test_time_never_goes_backwards_along_the_sequence(self):
        import datetime as dt

        from django.utils import timezone

        future = timezone.now() + dt.timedelta(minutes=5)  # a writer whose clock ran ahead
        seed_chain(1, start=future)
        with transaction.atomic():
            event = audit.record(action="test.after", actor=None)
        assert event.occurred_at == future
        assert audit.verify_chain() is None
