"""A worker's first dispatch against its later ones, side by side with a baseline revision.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/delegate_bench_load \
        .venv/bin/python bench/first_call.py [--baseline REV] [--samples 8] [--calls 4]

What dispatch asks of AWS for one request, timed in a freshly started process right after the
worker's start-up hook (tasks._after_fork, what Celery's worker_process_init runs): the target
check (EC2 DescribeInstances on the read session), the content check (SSM DescribeDocument, read
session), then AssumeRole naming the requester and StartAutomationExecution. The first sequence
is what the issue's p99 was made of (models loading, the read session's AssumeRole); the later
ones are the steady state. Each sample is a new process; the baseline's (REV, in a temporary git
worktree) and the working tree's alternate, on the same sandbox (loopback, no quotas) and database
(bench/load/seed.py's; only the account row is read). Asserts nothing.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/delegate_bench_load")
ROLE = "arn:aws:iam::123456789012:role/DelegateDispatch"
AUTOMATION_ROLE = "arn:aws:iam::123456789012:role/DelegateAutomation"


def child(tree: str, port: int, calls: int, instance: str) -> None:
    sys.path.insert(0, tree)
    os.chdir(tree)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "portal.settings", "DATABASE_URL": URL, "DJANGO_DEBUG": "false",
        "LOG_LEVEL": "WARNING", "REDIS_URL": "", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "AKIDLOADLOADLOAD0000", "AWS_SECRET_ACCESS_KEY": "load-secret-not-real",
        "AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true",
        # Pacing has its own benchmark; here it would only add the quota's wait between calls.
        "DELEGATE_RATE_START": "1000", "DELEGATE_RATE_READ": "1000",
        "DELEGATE_VAR_DIR": tempfile.mkdtemp(prefix="delegate-first-call-"),
    })
    import django

    django.setup()
    from automations import aws, tasks

    started = time.perf_counter()
    tasks._after_fork()  # the worker's start-up hook, in this tree's version
    startup_ms = (time.perf_counter() - started) * 1000
    timings = []
    for n in range(calls):
        began = time.perf_counter()
        aws.describe_instances(region="eu-west-1", role_arn=ROLE, instance_ids=[instance])
        aws.document_hash(region="eu-west-1", role_arn=ROLE, name="Load-Runbook00", version="1")
        aws.start_automation(
            region="eu-west-1", role_arn=ROLE, session_name=aws.role_session_name("delegate-req", str(n), "user007"),
            source_identity=aws.sts_source_identity("user007"), tags=aws.session_tags(requester="user007"),
            body={"DocumentName": "Load-Runbook00", "DocumentVersion": "1",
                  "Parameters": {"InstanceId": [instance], "AutomationAssumeRole": [AUTOMATION_ROLE]}},
            client_token=uuid.uuid4())
        timings.append((time.perf_counter() - began) * 1000)
    print(json.dumps({"startup_ms": startup_ms, "calls_ms": timings}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="git revision to measure alongside the working tree")
    parser.add_argument("--samples", type=int, default=8, help="fresh processes per tree")
    parser.add_argument("--calls", type=int, default=4, help="dispatch sequences per process")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--instance", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "bench" not in urlparse(URL).path:
        sys.exit("the load database name must contain 'bench'")
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("DELEGATE_AUDIT_DIGEST_KEY", "ed25519:" + base64.b64encode(os.urandom(32)).decode())
    if args.child:
        child(args.child, args.port, args.calls, args.instance)
        return 0

    sys.path.insert(0, str(ROOT))
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_pages", ROOT / "bench" / "pages.py")
    pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pages)

    from sandbox import Sandbox
    from sandbox.inventory import seeded_id

    sandbox = Sandbox(host="127.0.0.1", port=0).start()
    port = int(sandbox.url.rsplit(":", 1)[1])
    pages.create_documents(sandbox.url)
    trees = [("working tree", ROOT)]
    baseline_dir = None
    try:
        if args.baseline:
            baseline_dir = Path(tempfile.mkdtemp(prefix="delegate-baseline-")) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", str(baseline_dir), args.baseline],
                           cwd=ROOT, check=True, capture_output=True)
            trees.insert(0, (f"baseline {args.baseline}", baseline_dir))
        results: dict[str, list[dict]] = {label: [] for label, _ in trees}
        load_before = os.getloadavg()[0]
        for sample in range(args.samples):
            for label, tree in (trees if sample % 2 == 0 else trees[::-1]):
                out = subprocess.run(
                    [sys.executable, str(ROOT / "bench" / "first_call.py"), "--child", str(tree), "--port", str(port),
                     "--calls", str(args.calls), "--instance", seeded_id("i", "eu-west-1", "web-1")],
                    cwd=tree, check=True, capture_output=True, text=True, env=os.environ)
                results[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{args.samples} processes per tree x {args.calls} dispatch sequences, load average {load_before:.1f} -> "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
        print("| tree | start-up hook ms (median) | first dispatch ms: median / max | later dispatches ms: median / p90 |")
        print("|---|---:|---:|---:|")
        for label, _ in trees:
            rows = results[label]
            first = sorted(r["calls_ms"][0] for r in rows)
            later = sorted(ms for r in rows for ms in r["calls_ms"][1:])
            startup = statistics.median(r["startup_ms"] for r in rows)
            print(f"| {label} | {startup:.0f} | {statistics.median(first):.0f} / {first[-1]:.0f} | "
                  f"{statistics.median(later):.0f} / {later[min(len(later) - 1, int(0.9 * len(later)))]:.0f} |")
    finally:
        sandbox.stop()
        if baseline_dir is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline_dir)], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
