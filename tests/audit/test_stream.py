"""Issue 13, finding 2: no silent tail. Every committed audit event also goes to an append-only stream
outside the database (a JSON Lines file, or syslog RFC 5424 over TCP/TLS), so deleting the newest
events, after the last signed digest, is caught by `verify_audit --against` the stream.
"""
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import transaction

from automations import audit
from automations.audit import digests as audit_digests
from automations.audit import signing as audit_signing
from automations.audit import stream as audit_stream
from automations.audit.guards import TABLE
from automations.models import AuditEvent
from tests.audit_helpers import guards_bypassed, sql, verify

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stream_file(settings, tmp_path):
    path = tmp_path / "audit-stream.jsonl"
    settings.DELEGATE_AUDIT_STREAM = f"file:{path}"
    return path


@pytest.fixture
def digests(settings, tmp_path):
    settings.DELEGATE_AUDIT_DIGEST_KEY = audit_signing.generate_ed25519_key()[0]
    settings.DELEGATE_AUDIT_DIGEST_DIR = str(tmp_path / "digests")


def record_committed(count: int, capture) -> list[AuditEvent]:
    """Append events the way services do: inside a transaction, streamed when it commits."""
    events = []
    with capture(execute=True):
        for i in range(count):
            with transaction.atomic():
                events.append(audit.record(action="test.streamed", actor=None, details={"i": i}))
    assert audit_stream.flush(timeout=10), "the stream sender did not drain"
    return events


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.django_db
class TestFileStream:
    def test_stream_then_verify(self, stream_file, django_capture_on_commit_callbacks):
        events = record_committed(6, django_capture_on_commit_callbacks)
        written = [line for line in lines(stream_file) if "sequence" in line]
        assert [line["sequence"] for line in written] == [event.sequence for event in events]
        first = written[0]
        assert first["hash"] == events[0].hash and first["prev_hash"] == events[0].prev_hash
        assert first["event"]["action"] == "test.streamed" and first["event"]["details"] == {"i": 0}
        code, out, err = verify("--against", str(stream_file))
        assert code == 0, err
        assert "stream: events 1..6 (6) match the database" in out

    def test_a_rolled_back_event_is_never_streamed(self, stream_file, django_capture_on_commit_callbacks):
        record_committed(2, django_capture_on_commit_callbacks)
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
            with transaction.atomic():
                audit.record(action="test.rolled_back", actor=None)
                raise RuntimeError("the change failed")
        assert audit_stream.flush(timeout=10)
        assert [line["event"]["action"] for line in lines(stream_file)] == ["test.streamed"] * 2

    def test_tail_cut_after_the_last_digest_is_caught(self, stream_file, digests, django_capture_on_commit_callbacks):
        record_committed(7, django_capture_on_commit_callbacks)
        audit_digests.write_digest()  # pins 7
        record_committed(3, django_capture_on_commit_callbacks)
        with guards_bypassed():
            sql(f"DELETE FROM {TABLE} WHERE sequence > 7")
        # The chain and the digests cannot see it (the window the stream closes) ...
        assert verify()[0] == 0
        # ... the stream can.
        code, _, err = verify("--against", str(stream_file))
        assert code == 1
        assert "events 8..10" in err and "missing from the database" in err

    def test_an_edited_event_differs_from_the_stream(self, stream_file, django_capture_on_commit_callbacks):
        record_committed(5, django_capture_on_commit_callbacks)
        with guards_bypassed():
            sql(f"UPDATE {TABLE} SET actor_name = 'mallory' WHERE sequence = 3")
        code, _, err = verify("--against", str(stream_file), "--no-digests")
        assert code == 1 and "sequence 3" in err and "differs" in err

    def test_events_missing_from_the_stream_are_named(self, stream_file, django_capture_on_commit_callbacks):
        record_committed(5, django_capture_on_commit_callbacks)
        kept = [line for line in stream_file.read_text().splitlines() if json.loads(line).get("sequence") not in (3, 4)]
        stream_file.write_text("\n".join(kept) + "\n")
        code, _, err = verify("--against", str(stream_file), "--no-digests")
        assert code == 1 and "events 3..4" in err and "missing from the stream" in err

    def test_a_forged_stream_line_is_refused(self, stream_file, django_capture_on_commit_callbacks):
        record_committed(3, django_capture_on_commit_callbacks)
        rows = lines(stream_file)
        rows[1]["event"]["actor_name"] = "somebody-else"  # hash left as it was
        stream_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
        code, _, err = verify("--against", str(stream_file), "--no-digests")
        assert code == 1 and "sequence 2" in err and "does not match its hash" in err


class SyslogCollector:
    """A minimal RFC 5425/6587 syslog receiver: octet-counted frames over TCP, optionally TLS."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None):
        self.port, self.tls, self.frames = port, tls, []
        self._server = socket.create_server(("127.0.0.1", port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        try:
            self._frames_from(self.tls.wrap_socket(conn, server_side=True) if self.tls else conn)
        except OSError:
            pass  # the collector is closing, or the client went away

    def _frames_from(self, conn):
        buffer = b""
        with conn:
            while not self._stop.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while b" " in buffer:
                    length, _, rest = buffer.partition(b" ")
                    if len(rest) < int(length):
                        break
                    self.frames.append(rest[:int(length)].decode())
                    buffer = rest[int(length):]

    def messages(self) -> list[dict]:
        return [json.loads(frame[frame.index("{"):]) for frame in list(self.frames)]

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self._server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.django_db(transaction=True)
class TestSyslogStream:
    def test_a_dead_collector_never_blocks_the_writer_and_the_gap_is_recovered(self, settings, tmp_path):
        port = free_port()
        settings.DELEGATE_AUDIT_STREAM = f"syslog+tcp://127.0.0.1:{port}"
        settings.DELEGATE_AUDIT_STREAM_QUEUE_SIZE = 3  # small, so the queue overflows
        started = time.monotonic()
        for i in range(12):
            with transaction.atomic():  # each commits: on_commit runs at once
                audit.record(action="test.syslog", actor=None, details={"i": i})
        assert time.monotonic() - started < 3, "writing audit events waited for the dead collector"
        assert AuditEvent.objects.count() == 12

        collector = SyslogCollector(port)
        try:
            def all_delivered():
                return {m["sequence"] for m in collector.messages() if "sequence" in m} >= set(range(1, 13))
            assert wait_for(all_delivered), collector.messages()
            notices = [m for m in collector.messages() if "gap" in m]
            assert notices and notices[0]["gap"]["first_sequence"] <= notices[0]["gap"]["last_sequence"]
            frame = collector.frames[0]
            assert frame.startswith("<110>1 ") and " delegate " in frame and "[delegate@32473 " in frame
        finally:
            collector.close()
            audit_stream.flush(timeout=5)

        # What the collector kept verifies against the database.
        copy = tmp_path / "collected.log"
        copy.write_text("".join(frame + "\n" for frame in collector.frames))
        code, out, err = verify("--against", str(copy), "--no-digests")
        assert code == 0, err

    def test_tls(self, settings, tmp_path):
        cert, key = self_signed(tmp_path)
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(cert, key)
        port = free_port()
        collector = SyslogCollector(port, tls=server_tls)
        settings.DELEGATE_AUDIT_STREAM = f"syslog+tls://localhost:{port}"
        settings.DELEGATE_AUDIT_STREAM_TLS_CA = str(cert)
        try:
            with transaction.atomic():
                event = audit.record(action="test.tls", actor=None)
            assert wait_for(lambda: any(m.get("sequence") == event.sequence for m in collector.messages()))
        finally:
            collector.close()
            audit_stream.flush(timeout=5)


def self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "collector.pem", directory / "collector.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_digest_cadence_goes_down_to_ten_seconds():
    probe = "from django.conf import settings; print(settings.CELERY_BEAT_SCHEDULE['write-audit-digest']['schedule'])"
    base = {"DJANGO_SETTINGS_MODULE": "portal.settings", "PATH": "/usr/bin:/bin", "DJANGO_DEBUG": "true"}
    ten = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + probe], cwd=ROOT,
                         env={**base, "DELEGATE_AUDIT_DIGEST_SECONDS": "10"}, capture_output=True, text=True)
    assert ten.returncode == 0 and ten.stdout.strip() == "10.0", ten.stderr
    five = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + probe], cwd=ROOT,
                          env={**base, "DELEGATE_AUDIT_DIGEST_SECONDS": "5"}, capture_output=True, text=True)
    assert five.returncode != 0 and "DELEGATE_AUDIT_DIGEST_SECONDS" in five.stderr


@pytest.mark.django_db
def test_a_lost_range_is_resent_by_command(stream_file, django_capture_on_commit_callbacks):
    from django.core.management import call_command

    record_committed(4, django_capture_on_commit_callbacks)
    kept = [line for line in stream_file.read_text().splitlines() if json.loads(line)["sequence"] < 3]
    stream_file.write_text("\n".join(kept) + "\n")  # what a process killed with lines still queued leaves
    assert verify("--against", str(stream_file), "--no-digests")[0] == 1
    call_command("audit_stream", "3", "4", stdout=__import__("io").StringIO())
    code, _, err = verify("--against", str(stream_file), "--no-digests")
    assert code == 0, err


@pytest.mark.django_db
def test_the_digest_key_prints_its_public_key(settings):
    import io

    from django.core.management import call_command

    private, public = audit_signing.generate_ed25519_key()
    settings.DELEGATE_AUDIT_DIGEST_KEY = private
    out = io.StringIO()
    call_command("audit_digest", "--public-key", stdout=out)
    assert out.getvalue().strip() == public
