"""The sandbox is a package of its own: no Django or portal import, and `manage.py sandbox` starts it."""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parents[2]
PORTAL_PACKAGES = {"django", "rest_framework", "automations", "portal", "celery", "tests"}


def imported_top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_sandbox_imports_nothing_of_django_or_the_portal():
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_top_level_names(path) & PORTAL_PACKAGES)
        for path in (REPO / "sandbox").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_importing_the_sandbox_loads_no_django():
    code = "import sys, sandbox; print(sorted(m for m in sys.modules if m.split('.')[0] in {'django', 'automations', 'portal'}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_manage_py_sandbox_serves_until_sigterm():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox", "--port", str(port), "--time-scale", "20"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, line
        sts = boto3.client(
            "sts",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        assert sts.get_caller_identity()["Account"] == "123456789012"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)  # a stop waits for the world seeding to finish
    assert process.returncode == 0, output
