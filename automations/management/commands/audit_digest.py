"""manage.py audit_digest: write a signed digest now (what the beat task does), or make a key."""
from django.core.management.base import BaseCommand, CommandError

from automations.audit import digests as audit_digests
from automations.audit import signing as audit_signing


class Command(BaseCommand):
    help = "Write one signed audit digest now; --generate-key prints a new Ed25519 key for DELEGATE_AUDIT_DIGEST_KEY."

    def add_arguments(self, parser):
        parser.add_argument("--generate-key", action="store_true")
        parser.add_argument("--public-key", action="store_true",
                            help="Print the public key of DELEGATE_AUDIT_DIGEST_KEY (for auditors, and for"
                                 " DELEGATE_AUDIT_DIGEST_PREVIOUS_KEYS when the key is rotated).")
        parser.add_argument("--force", action="store_true", help="Write a digest even if no event is new.")

    def handle(self, *args, generate_key=False, public_key=False, force=False, **options):
        if public_key:
            signer = audit_signing.configured_signer()
            if signer is None or not signer.public_key:
                raise CommandError("DELEGATE_AUDIT_DIGEST_KEY is not an ed25519 key.")
            self.stdout.write(signer.public_key)
            return
        if generate_key:
            private, public = audit_signing.generate_ed25519_key()
            self.stdout.write(f"DELEGATE_AUDIT_DIGEST_KEY={private}\n# public key for auditors: {public}")
            return
        try:
            path = audit_digests.write_digest(force=force)
        except audit_signing.DigestError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"wrote {path}" if path else "nothing new since the last digest")
