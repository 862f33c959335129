"""manage.py verify_audit: the chain, signed archive manifests, signed digests and (optionally) the external stream."""
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from automations import audit
from automations.audit import archive as audit_archive
from automations.audit import digests as audit_digests
from automations.audit import manifests as audit_manifests
from automations.audit import signing as audit_signing
from automations.models import AuditEvent


class Command(BaseCommand):
    help = ("Verify the audit log: the hash chain (edits, deletions, reordering) and the signed digests"
            " (deleted newest events, rewritten chains). Exits 1 naming the first bad sequence number.")

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="start", type=int,
                            help="First sequence to check (default: the oldest event in the database).")
        parser.add_argument("--to", dest="end", type=int, help="Last sequence to check (default: the newest).")
        parser.add_argument("--anchor", help="Hash of the event before --from, from a trusted source.")
        parser.add_argument("--archive", type=Path,
                            help="An archive manifest (archive_audit): verify its file, and anchor the database"
                                 " chain right after it.")
        parser.add_argument("--digest-dir", type=Path, help="Digest directory (default DELEGATE_AUDIT_DIGEST_DIR).")
        parser.add_argument("--public-key", action="append", default=[],
                            help="Trust this key for digests and archive manifests (ed25519-pub:…, or an earlier key"
                                 " after a rotation); repeat for several. DELEGATE_AUDIT_DIGEST_KEY and"
                                 " DELEGATE_AUDIT_DIGEST_PREVIOUS_KEYS are trusted too.")
        parser.add_argument("--no-digests", action="store_true", help="Check the chain only.")
        parser.add_argument("--require-digests", action="store_true",
                            help="Fail when no digest key or no digest is available.")
        parser.add_argument("--against", type=Path,
                            help="The external audit stream (JSON Lines, or syslog lines as collected): report events"
                                 " missing from the database or from the stream, and events that differ.")

    def fail(self, *problems: audit.ChainProblem):
        first, *others = sorted(problems, key=lambda problem: problem.sequence)
        self.stderr.write(f"FAILED: first bad event is sequence {first.sequence}: {first.reason}")
        for other in others:
            self.stderr.write(f"also: sequence {other.sequence}: {other.reason}")
        raise SystemExit(1)

    def handle(self, *args, start=None, end=None, anchor=None, archive=None, digest_dir=None, public_key=None,
               no_digests=False, require_digests=False, against=None, **options):
        # Keys are needed for manifests even with --no-digests: only a signed manifest explains a gap.
        signers = audit_signing.trusted_signers([audit_signing.signer_from(value) for value in public_key or []])
        problems: list[audit.ChainProblem] = []
        how = None
        extra_manifests = []

        if archive is not None:
            report = audit_archive.verify_archive(archive, signers)
            if report.problem:
                self.fail(report.problem)
            manifest = json.loads(archive.read_bytes())
            extra_manifests.append(archive)
            self.stdout.write(f"archive {archive.name}: events {manifest['first_sequence']}..{manifest['last_sequence']}"
                              " verified")
            if start is None:
                start = manifest["last_sequence"] + 1
            if start == manifest["last_sequence"] + 1 and anchor is None:
                anchor, how = manifest["last_hash"], f"the archive manifest {archive.name}"

        oldest = AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True).first()
        explicit_start = start is not None
        if start is None:
            start = oldest or 1
        if anchor is not None and how is None:
            how = "the given anchor"
        coverage = audit_manifests.front_coverage(oldest or start, signers, extra_manifests)
        if anchor is None and start == 1:
            anchor, how = audit.GENESIS_HASH, "genesis"
        elif anchor is None and oldest is not None and start == oldest:
            # The events below the oldest stored one are gone: only signed manifests may account for them.
            anchor = coverage.anchor
            if anchor is not None:
                how = f"the signed archive manifest(s) for events 1..{start - 1}"
            problems += coverage.problems
        elif anchor is None:
            how = f"the stored prev_hash of event {start} (trusted: pass --anchor or --archive to check it)"
            if not explicit_start:
                problems += coverage.problems
        else:
            # An explicit anchor, but a forged manifest is still worth reporting.
            problems += [problem for problem in coverage.problems if "missing" not in problem.reason]
        problems += audit_manifests.manifests_against_stored(coverage.manifests)

        report = audit.check_chain(start=start, end=end, anchor_hash=anchor)
        if report.problem:
            problems.append(report.problem)

        digests_line = "digests: not checked (--no-digests)"
        if not no_digests:
            if not signers:
                digests_line = ("digests: DELEGATE_AUDIT_DIGEST_KEY is not set, so deletion of the newest events"
                                " cannot be detected")
                if require_digests:
                    raise CommandError("--require-digests: no digest key configured.")
            else:
                directory = digest_dir or audit_digests.digest_dir()
                digests = audit_digests.verify_digests(signer=signers, directory=directory, start=start, end=end,
                                                       manifests=coverage.manifests)
                problems += digests.problems
                if digests.digests == 0 and require_digests:
                    raise CommandError(f"--require-digests: no digest files in {directory}.")
                digests_line = (f"digests: {digests.digests} verified in {directory}, the newest pins event"
                                f" {digests.last_pinned}")
                if report.last_sequence and report.last_sequence > digests.last_pinned:
                    digests_line += f"; events after {digests.last_pinned} are not pinned by a digest yet"
                for note in digests.notes:
                    self.stdout.write(f"note: {note}")

        stream_line = None
        if against is not None:
            from automations.audit import stream as audit_stream

            compared = audit_stream.compare(against, manifests=coverage.manifests, start=start, end=end)
            problems += compared.problems
            stream_line = compared.summary
            for note in compared.notes:
                self.stdout.write(f"note: {note}")

        if problems:
            self.fail(*problems)
        if report.checked:
            self.stdout.write(f"chain: events {report.first_sequence}..{report.last_sequence} ({report.checked})"
                              f" verified, anchored at {how}")
        else:
            self.stdout.write("chain: no events in range")
        self.stdout.write(digests_line)
        if stream_line:
            self.stdout.write(stream_line)
        self.stdout.write(self.style.SUCCESS("OK: the audit log is intact."))
