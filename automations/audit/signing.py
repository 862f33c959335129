"""The audit signing keys: parse, sign, verify, and the bytes a digest or archive manifest is signed over.

Digests (automations.audit.digests) and archive manifests (automations.audit.archive) are signed
with the same key, and the manifest checks (automations.audit.manifests) verify with it, so the
primitives live here, below all three, rather than in one of them.

Key formats (docs/audit.md): ``ed25519:<base64 32-byte private seed>`` (preferred: auditors
verify with the public key alone) or ``hmac-sha256:<secret of 32+ characters>``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from automations.canonical import canonical_json


class DigestError(Exception):
    """A digest cannot be written: the chain disagrees with the last digest, or no key.

    Defined here because Signer.sign raises it (a verify-only key cannot sign); digests raises it too.
    """


@dataclass(frozen=True)
class Signer:
    """One audit key: signs (seed or HMAC secret) and verifies; key_id names it in every file it signs."""

    algorithm: str
    key_id: str
    _secret: bytes = field(repr=False, default=b"")
    _private: object = field(repr=False, default=None)
    _public: object = field(repr=False, default=None)

    def sign(self, data: bytes) -> str:
        if self.algorithm == "hmac-sha256":
            return base64.b64encode(hmac.new(self._secret, data, hashlib.sha256).digest()).decode()
        if self._private is None:
            raise DigestError("Only the public key is configured: this process can verify digests, not write them.")
        return base64.b64encode(self._private.sign(data)).decode()

    def verify(self, data: bytes, signature: str) -> bool:
        try:
            raw = base64.b64decode(signature, validate=True)
        except (ValueError, TypeError):
            return False
        if self.algorithm == "hmac-sha256":
            return hmac.compare_digest(raw, hmac.new(self._secret, data, hashlib.sha256).digest())
        from cryptography.exceptions import InvalidSignature

        try:
            self._public.verify(raw, data)
            return True
        except InvalidSignature:
            return False

    @property
    def public_key(self) -> str:
        """`ed25519-pub:<base64>` for auditors' verify-only use; empty for HMAC (the key is the secret)."""
        if self.algorithm != "ed25519":
            return ""
        from cryptography.hazmat.primitives import serialization

        raw = self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519-pub:" + base64.b64encode(raw).decode()


def signer_from(value: str) -> Signer:
    """Parse a key setting: ed25519:<seed>, ed25519-pub:<public key> (verify only), or hmac-sha256:<secret>."""
    value = (value or "").strip()
    kind, _, material = value.partition(":")
    if kind in ("ed25519", "ed25519-pub"):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

        try:
            raw = base64.b64decode(material, validate=True)
            if kind == "ed25519":
                private = Ed25519PrivateKey.from_private_bytes(raw)
                public = private.public_key()
            else:
                private, public = None, Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as error:
            raise ImproperlyConfigured(f"The audit digest key is not a valid {kind} key (base64 of 32 bytes).") from error
        public_raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return Signer("ed25519", "ed25519:" + hashlib.sha256(public_raw).hexdigest()[:16],
                      _private=private, _public=public)
    if kind == "hmac-sha256":
        secret = material.encode()
        if len(secret) < 32:
            raise ImproperlyConfigured("An HMAC audit digest key needs at least 32 characters.")
        key_id = hashlib.sha256(b"delegate-audit-digest-key-id:" + secret).hexdigest()[:16]
        return Signer("hmac-sha256", "hmac-sha256:" + key_id, _secret=secret)
    raise ImproperlyConfigured("DELEGATE_AUDIT_DIGEST_KEY must start with ed25519: or hmac-sha256: (docs/audit.md).")


def configured_signer() -> Signer | None:
    value = settings.DELEGATE_AUDIT_DIGEST_KEY
    return signer_from(value) if value else None


def trusted_signers(extra=()) -> list[Signer]:
    """Keys whose signatures verify_audit accepts: the configured key, the keys it replaced
    (DELEGATE_AUDIT_DIGEST_PREVIOUS_KEYS, public keys after a rotation), and any given."""
    keys = [one for one in extra if one is not None]
    configured = configured_signer()
    if configured:
        keys.append(configured)
    keys += [signer_from(value) for value in getattr(settings, "DELEGATE_AUDIT_DIGEST_PREVIOUS_KEYS", []) if value]
    unique: dict[str, Signer] = {}
    for key in keys:
        # A signing key beats the public-only form of the same key.
        if key.key_id not in unique or unique[key.key_id]._private is None:
            unique[key.key_id] = key
    return list(unique.values())


def generate_ed25519_key() -> tuple[str, str]:
    """A new (private setting, public key) pair for DELEGATE_AUDIT_DIGEST_KEY."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    value = "ed25519:" + base64.b64encode(seed).decode()
    return value, signer_from(value).public_key


def signed_bytes(digest: dict) -> bytes:
    """The bytes a digest or an archive manifest is signed over: its canonical JSON without the signature."""
    return canonical_json({key: value for key, value in digest.items() if key != "signature"})
