"""Issue 13, finding 1: the front of the chain can only go away under a signed archive manifest.

An attacker with database write access deletes the oldest events and appends an `audit.archived`
event anchoring what survives. verify_audit must not believe an unsigned row: a gap below the
first stored event is accepted only when valid signed manifests cover it exactly, and every
digest head must be present or covered by a signed manifest. Runs on SQLite and PostgreSQL.
"""
import json

import pytest
from django.db import transaction

from automations import audit
from automations.audit import archive as audit_archive
from automations.audit import digests as audit_digests
from automations.audit import signing as audit_signing
from automations.audit.guards import TABLE
from automations.models import AuditEvent
from tests.audit_helpers import guards_bypassed, seed_chain, sql, verify

pytestmark = pytest.mark.django_db


@pytest.fixture
def digests(settings, tmp_path):
    """Digests and manifests signed with a fresh Ed25519 key, into a temporary directory."""
    private, public = audit_signing.generate_ed25519_key()
    settings.DELEGATE_AUDIT_DIGEST_KEY = private
    settings.DELEGATE_AUDIT_DIGEST_PREVIOUS_KEYS = []
    settings.DELEGATE_AUDIT_DIGEST_DIR = str(tmp_path / "digests")
    return private, public


def purge(first: int, last: int) -> None:
    """The out-of-band DELETE a DBA (or an attacker with the owner's access) runs."""
    with guards_bypassed():
        sql(f"DELETE FROM {TABLE} WHERE sequence BETWEEN %s AND %s", [first, last])


def forge_archived_row(last_sequence: int) -> None:
    """The attacker's anchor: an audit.archived event, appended through the normal writer."""
    first_surviving = AuditEvent.objects.get(sequence=last_sequence + 1)
    with transaction.atomic():
        audit.record(action="audit.archived", actor=None, actor_name="system:archive_audit", details={
            "first_sequence": 1, "last_sequence": last_sequence, "event_count": last_sequence,
            "anchor_prev_hash": audit.GENESIS_HASH, "last_hash": first_surviving.prev_hash,
        })


def archive(through: int, out_dir):
    return audit_archive.archive(through=through, out_dir=out_dir, signer=audit_signing.configured_signer())


class TestFrontCut:
    def test_a_forged_archived_row_does_not_anchor_a_front_cut(self, digests):
        seed_chain(10)
        audit_digests.write_digest()  # pins event 10, which survives the cut
        purge(1, 4)
        forge_archived_row(4)
        code, _, err = verify()
        assert code == 1, err
        assert "events 1..4" in err and "signed archive manifest" in err
        # The next digest must not launder the cut: the writer refuses, and verify still fails.
        with pytest.raises(audit_signing.DigestError, match="1..4"):
            audit_digests.write_digest()
        code, _, err = verify("--require-digests")
        assert code == 1 and "events 1..4" in err

    def test_a_front_cut_before_the_first_digest_is_not_laundered(self, digests):
        seed_chain(10)
        purge(1, 4)
        forge_archived_row(4)
        with pytest.raises(audit_signing.DigestError, match="1..4"):
            audit_digests.write_digest()
        code, _, err = verify()
        assert code == 1 and "events 1..4" in err

    def test_a_manifest_with_a_bad_signature_does_not_anchor(self, digests, tmp_path):
        seed_chain(10)
        legit = archive(4, tmp_path / "archive")
        purge(1, 4)
        assert verify()[0] == 0
        # The attacker extends the archive to 1..7 with a manifest signed by a key of their own,
        # inserted where verify_audit looks for manifests (INSERT is what the application may do).
        attacker = audit_signing.signer_from(audit_signing.generate_ed25519_key()[0])
        forged = dict(legit.manifest, last_sequence=7, event_count=7,
                      last_hash=AuditEvent.objects.get(sequence=8).prev_hash)
        forged["signature"] = attacker.sign(audit_signing.signed_bytes(forged))
        from automations.models import AuditArchiveManifest

        AuditArchiveManifest.objects.create(first_sequence=1, last_sequence=7, document=json.dumps(forged))
        purge(5, 7)
        code, _, err = verify()
        assert code == 1, err
        assert "1..7" in err and "invalid signature" in err
        assert "events 5..7" in err

    def test_a_bad_manifest_file_is_named_by_its_range(self, digests, tmp_path):
        seed_chain(10)
        legit = archive(4, tmp_path / "archive")
        document = json.loads(legit.manifest_path.read_text())
        document["signature"] = document["signature"][::-1]
        legit.manifest_path.chmod(0o644)
        legit.manifest_path.write_text(json.dumps(document))
        code, _, err = verify("--archive", str(legit.manifest_path))
        assert code == 1 and "1..4" in err and "invalid signature" in err

    def test_a_digest_head_whose_events_vanished(self, digests, tmp_path):
        seed_chain(5)
        audit_digests.write_digest()  # digest 1 pins event 5
        seed_chain(5)
        archive(3, tmp_path / "archive")  # a legitimate, signed archive of 1..3
        purge(1, 3)
        assert verify()[0] == 0
        # The attacker also removes 4..5 and anchors event 6 with a forged row.
        purge(4, 5)
        forge_archived_row(5)
        code, _, err = verify()
        assert code == 1, err
        assert "events 4..5" in err
        assert "digest 1" in err and "neither stored nor covered by a signed archive manifest" in err


class TestArchiveHappyPath:
    def test_archive_purge_then_verify(self, digests, tmp_path):
        seed_chain(5)
        audit_digests.write_digest()  # a head inside the range that will be archived
        seed_chain(15)
        result = archive(12, tmp_path / "archive")
        manifest = result.manifest
        assert (manifest["first_sequence"], manifest["last_sequence"], manifest["event_count"]) == (1, 12, 12)
        assert manifest["first_hash"] == AuditEvent.objects.get(sequence=1).hash
        assert manifest["last_hash"] == AuditEvent.objects.get(sequence=12).hash
        assert manifest["algorithm"] == "ed25519" and manifest["signature"]
        from automations.models import AuditArchiveManifest

        assert AuditArchiveManifest.objects.filter(first_sequence=1, last_sequence=12).count() == 1

        purge(1, 12)
        code, out, err = verify("--require-digests")
        assert code == 0, err
        assert "events 13..21" in out and "signed archive manifest" in out
        audit_digests.write_digest()  # digests keep working after the purge
        assert verify("--require-digests")[0] == 0
        code, out, _ = verify("--archive", str(result.manifest_path))
        assert code == 0 and "events 1..12 verified" in out

        # A second archive continues the first; both purged, the chain still verifies.
        second = archive(16, tmp_path / "archive")
        assert second.manifest["first_sequence"] == 13 and second.manifest["anchor_prev_hash"] == manifest["last_hash"]
        purge(13, 16)
        code, out, err = verify()
        assert code == 0, err

        # Anything removed beyond the archives is still named.
        purge(17, 17)
        code, _, err = verify()
        assert code == 1 and "events 17..17" in err

    def test_archives_need_the_signing_key(self, settings, tmp_path):
        settings.DELEGATE_AUDIT_DIGEST_KEY = ""
        seed_chain(5)
        with pytest.raises(audit_archive.ArchiveError, match="DELEGATE_AUDIT_DIGEST_KEY"):
            audit_archive.archive(through=2, out_dir=tmp_path, signer=None)


class TestKeyRotation:
    def test_old_digests_and_manifests_stay_verifiable_after_rotation(self, digests, settings, tmp_path):
        old_private, old_public = digests
        seed_chain(6)
        audit_digests.write_digest()
        archive(3, tmp_path / "archive")
        purge(1, 3)
        # Rotation: the new key signs from now on; the old key's public half stays trusted.
        new_private, _ = audit_signing.generate_ed25519_key()
        settings.DELEGATE_AUDIT_DIGEST_KEY = new_private
        settings.DELEGATE_AUDIT_DIGEST_PREVIOUS_KEYS = [old_public]
        seed_chain(3)
        second = audit_digests.load(audit_digests.write_digest())
        assert second["key_id"] == audit_signing.signer_from(new_private).key_id
        code, out, err = verify("--require-digests")
        assert code == 0, err
        assert "digests: 2 verified" in out
        # Without the old public key, the old digest and manifest are not trusted ...
        settings.DELEGATE_AUDIT_DIGEST_PREVIOUS_KEYS = []
        code, _, err = verify()
        assert code == 1 and "not a trusted key" in err
        # ... and an auditor can trust it on the command line instead.
        code, out, err = verify("--public-key", old_public)
        assert code == 0, err


class TestDigestCopies:
    def test_removing_the_newest_digest_files_is_caught(self, digests):
        seed_chain(3)
        first = audit_digests.write_digest()
        seed_chain(3)
        newest = audit_digests.write_digest()
        newest.unlink()  # the files' own chain cannot show a missing newest file
        code, _, err = verify()
        assert code == 1 and "digest 2" in err and "recorded in the database but its file is missing" in err
        with pytest.raises(audit_signing.DigestError, match="Digest 2 is recorded in the database"):
            audit_digests.write_digest()
        assert first.exists()
