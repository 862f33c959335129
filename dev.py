#!/usr/bin/env python3
"""Delegate's two commands, for a fresh machine with only Python 3.11+:

    python3 dev.py demo    # sandbox + web + worker + scheduler on embedded defaults, seeded
    python3 dev.py test    # the test suite (PostgreSQL when DATABASE_URL is set, else SQLite)
    python3 dev.py mutation policy|audit|transitions|dispatch   # mutation score (bench/mutation.py)

Both create .venv and install the project into it the first time (and when pyproject.toml changes).
This file uses only the standard library.
"""
from __future__ import annotations

import base64
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".delegate-installed"
# Every login seed_demo makes (automations/management/commands/seed_demo.py), one line each in the banner.
DEMO_USERS = (
    ("alice", "requester, team platform"),
    ("bob", "lead (approver), team platform: lands on Approvals"),
    ("frank", "second lead, team platform (two-approver policies, step approvals)"),
    ("dave", "requester, team data"),
    ("erin", "lead (approver), team data"),
    ("carol", "auditor: reads every request and the audit log"),
    ("admin", "superuser: Django admin, policies, teams"),
)


def say(message: str) -> None:
    print(f"\033[1m[delegate]\033[0m {message}", flush=True)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit("Delegate needs Python 3.11 or newer.")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        say("creating .venv")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    say("installing dependencies (first run only)")
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def manage(*args: str, env: dict) -> None:
    subprocess.run([str(PYTHON), "manage.py", *args], cwd=ROOT, env=env, check=True)


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


def demo_secret(var: Path, name: str, make) -> str:
    """A secret for the demo, made once and kept in var/ (0600); production sets its own."""
    key_file = var / name
    if not key_file.exists():
        key_file.write_text(make())
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def demo() -> None:
    ensure_venv()
    port = os.environ.get("PORT", "8000")
    sandbox_port = os.environ.get("SANDBOX_PORT", "4566")
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    for folder in ("processed", "control"):
        (var / "broker" / folder).mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{sandbox_port}",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "AKIDDEMODEMODEMO0000"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "demo-secret-not-real"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "eu-west-1"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "DELEGATE_STATUS_POLL_SECONDS": os.environ.get("DELEGATE_STATUS_POLL_SECONDS", "2"),
        "DELEGATE_OUTBOX_SWEEP_SECONDS": os.environ.get("DELEGATE_OUTBOX_SWEEP_SECONDS", "5"),
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port},http://localhost:{port}",
        "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"),
        "PYTHONUNBUFFERED": "1",
        # Links in notification mail point at this demo, whatever PORT is.
        "DELEGATE_SITE_URL": os.environ.get("DELEGATE_SITE_URL", f"http://127.0.0.1:{port}"),
        # Notification mail is written to files in var/mail/, one per message, instead of being sent.
        "DJANGO_EMAIL_BACKEND": os.environ.get("DJANGO_EMAIL_BACKEND",
                                               "django.core.mail.backends.filebased.EmailBackend"),
        "DJANGO_EMAIL_FILE_PATH": os.environ.get("DJANGO_EMAIL_FILE_PATH", str(var / "mail")),
    }
    # DEBUG stays off in the demo, so it needs a real secret key and a digest key (an Ed25519 seed).
    env.setdefault("DJANGO_SECRET_KEY", demo_secret(var, "secret.key", lambda: secrets.token_urlsafe(50)))
    env.setdefault("DELEGATE_AUDIT_DIGEST_KEY", demo_secret(
        var, "audit-digest.key", lambda: "ed25519:" + base64.b64encode(os.urandom(32)).decode()))
    env.setdefault("DELEGATE_AUDIT_DIGEST_SECONDS", "10")
    env.setdefault("DELEGATE_METRICS_ALLOWED_IPS", "127.0.0.1,::1")  # the demo listens on loopback only
    processes: list[tuple[str, subprocess.Popen]] = []

    def start(name: str, *args: str) -> None:
        say(f"starting {name}")
        processes.append((name, subprocess.Popen(list(args), cwd=ROOT, env=env, start_new_session=True)))

    def stop_all(*_args) -> None:
        say("stopping")
        for _name, process in reversed(processes):
            if process.poll() is None:
                # The main process only: Celery and gunicorn stop their own children cleanly.
                process.terminate()
        deadline = time.monotonic() + 10
        for _name, process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for _name, process in processes:  # stragglers in each process group
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        start("sandbox", str(PYTHON), "manage.py", "sandbox", "--port", sandbox_port,
              "--state-file", str(var / "sandbox-state.json"))
        # health answers 200 once the sandbox's world is seeded (a few seconds; more on a busy machine)
        wait_http(f"http://127.0.0.1:{sandbox_port}/_sandbox/health", timeout=120)
        manage("migrate", "--noinput", "-v", "0", env=env)
        manage("collectstatic", "--noinput", "-v", "0", env=env)
        manage("seed_demo", env=env)
        start("worker", str(PYTHON), "-m", "celery", "-A", "portal", "worker", "-l", "warning", "-c", "2",
              "-n", "demo@%h")
        start("scheduler", str(PYTHON), "-m", "celery", "-A", "portal", "beat", "-l", "warning",
              "-s", str(var / "celerybeat-schedule"))
        start("web", str(PYTHON), "-m", "gunicorn", "portal.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2",
              "--threads", "4", "--access-logfile", "-", "--log-level", "warning")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        say(f"Delegate is running at http://127.0.0.1:{port}/  (API docs: /api/docs/, sandbox: http://127.0.0.1:{sandbox_port})")
        say("demo logins (password for all: delegate-demo):")
        for username, role in DEMO_USERS:
            say(f"  {username:<6} {role}")
        if env["DJANGO_EMAIL_BACKEND"].endswith("filebased.EmailBackend"):
            say(f"notification mail goes to files in {env['DJANGO_EMAIL_FILE_PATH']}/ (one file per message)")
        else:
            say(f"notification mail goes through {env['DJANGO_EMAIL_BACKEND']}")
        say(f"links in mail point at {env['DELEGATE_SITE_URL']}")
        say(f"make a run fail: curl -X POST http://127.0.0.1:{sandbox_port}/_sandbox/faults "
            "-d '{\"fail_step\": [\"stopInstances\"]}'  (undo: POST /_sandbox/reset-faults)")
        say("Ctrl-C stops everything")
        while True:
            for name, process in processes:
                if process.poll() is not None:
                    say(f"{name} exited with {process.returncode}; stopping the demo")
                    stop_all()
            time.sleep(1)
    except (subprocess.CalledProcessError, SystemExit) as error:
        if isinstance(error, SystemExit) and error.code in (0, None):
            raise
        say(f"demo failed: {error}")
        stop_all()


def test(args: list[str]) -> int:
    ensure_venv()
    # pytest-django takes portal.settings_test from pyproject.toml (generated keys, DEBUG off).
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run([str(PYTHON), "-m", "pytest", *args], cwd=ROOT, env=env).returncode


def mutation(args: list[str]) -> int:
    """bench/mutation.py with the mutation extra installed (mutmut); SQLite, one mutant at a time."""
    ensure_venv()
    if subprocess.run([str(PYTHON), "-c", "import mutmut"], capture_output=True).returncode != 0:
        say("installing the mutation extra (mutmut)")
        subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "-e", f"{ROOT}[test,mutation]"], check=True)
    env = {key: value for key, value in os.environ.items() if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
    return subprocess.run([str(PYTHON), str(ROOT / "bench" / "mutation.py"), *args], cwd=ROOT, env=env).returncode


def main() -> None:
    commands = {"demo": lambda args: demo(), "test": test, "mutation": mutation}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    sys.exit(commands[sys.argv[1]](sys.argv[2:]))


if __name__ == "__main__":
    main()
