"""Settings for the test suite: the production settings (DEBUG off), with this run's own secrets and audit paths.

DEBUG is off in tests, as in production, so a real secret key and a digest key are required:
they are generated per run (what dev.py does for the demo) and put in the environment, so every
process a test starts (manage.py, gunicorn, Celery workers, with DJANGO_SETTINGS_MODULE=portal.settings)
inherits them. Digests and the audit stream go to a directory of this run, never to var/; beat's
digest cadence is long, so worker processes in tests do not race the tests' own digests.
"""
import atexit
import base64
import os
import secrets
import shutil
import tempfile

_RUN_DIR = tempfile.mkdtemp(prefix="delegate-test-run-")
atexit.register(shutil.rmtree, _RUN_DIR, True)
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DELEGATE_AUDIT_DIGEST_KEY", "ed25519:" + base64.b64encode(os.urandom(32)).decode())
os.environ.setdefault("DELEGATE_AUDIT_DIGEST_SECONDS", "3600")
os.environ.setdefault("DELEGATE_AUDIT_DIGEST_DIR", os.path.join(_RUN_DIR, "audit-digests"))
os.environ.setdefault("DELEGATE_AUDIT_STREAM", "file:" + os.path.join(_RUN_DIR, "audit-stream.jsonl"))

from portal.settings import *  # noqa: E402,F403
