"""Load test: gunicorn + PostgreSQL (seeded by bench/load/seed.py) + the sandbox, driven by locust.

    .venv/bin/python bench/load/seed.py                     # once: 100k requests, 1M audit events
    .venv/bin/python bench/load/run.py [--users 50] [--run-time 60] [--max-requests 60000]
    .venv/bin/python bench/load/run.py --queries            # SQL queries per page, no load
    .venv/bin/python bench/load/run.py --baseline REV --slices 3 --run-time 60   # REV and the working tree, alternating

Everything listens on 127.0.0.1 and is stopped at the end (by its own process group). Prints the
p50/p95/p99 per page and the error rate as a Markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

# DEBUG is off here, as in production: this run's own secrets (portal/settings.py refuses to start without).
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DELEGATE_AUDIT_DIGEST_KEY", "ed25519:" + base64.b64encode(os.urandom(32)).decode())


ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/delegate_bench_load")
BIN = Path(sys.executable).parent
PAGES = ("catalog", "my requests", "approval queue", "request detail", "audit search")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


def server_env(sandbox_port: int) -> dict:
    return {
        **os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "DATABASE_URL": URL, "DJANGO_DEBUG": "false",
        "LOG_LEVEL": "WARNING", "DELEGATE_LOGIN_LOCKOUT": "false", "REDIS_URL": "",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{sandbox_port}", "AWS_ACCESS_KEY_ID": "AKIDLOADLOADLOAD0000",
        "AWS_SECRET_ACCESS_KEY": "load-secret-not-real", "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true", "DELEGATE_VAR_DIR": tempfile.mkdtemp(prefix="delegate-load-"),
    }


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as handle:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def create_documents(url: str) -> None:
    """The seed's runbooks as documents in the sandbox (bench/pages.py's helper): the approver's
    page reads each version's SSM hash."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_pages", ROOT / "bench" / "pages.py")
    pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pages)
    pages.create_documents(url)


def report(prefix: Path) -> str:
    rows = list(csv.DictReader((prefix.parent / f"{prefix.name}_stats.csv").open()))
    lines = ["| page | requests | errors | p50 ms | p95 ms | p99 ms | req/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    by_name = {row["Name"]: row for row in rows}
    for name in (*PAGES, "sign in", "Aggregated"):
        row = by_name.get(name)
        if row is None:
            continue
        label = "**all pages**" if name == "Aggregated" else name
        lines.append(f"| {label} | {int(row['Request Count']):,} | {int(row['Failure Count']):,} | "
                     f"{row['50%']} | {row['95%']} | {row['99%']} | {float(row['Requests/s']):.1f} |")
    total = by_name.get("Aggregated")
    if total:
        rate = int(total["Failure Count"]) / max(1, int(total["Request Count"]))
        lines.append(f"\nerror rate: {rate:.3%} ({int(total['Failure Count'])} of {int(total['Request Count']):,})")
    failures = prefix.parent / f"{prefix.name}_failures.csv"
    if failures.exists():
        for row in list(csv.DictReader(failures.open()))[:10]:
            lines.append(f"failure: {row.get('Name')} {row.get('Error')} x{row.get('Occurrences')}")
    return "\n".join(lines)


def run_locust(args, web_port: int, prefix: Path, run_time: int) -> None:
    subprocess.run([str(BIN / "locust"), "-f", str(ROOT / "bench/load/locustfile.py"), "--headless",
                    "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
                    "--run-time", f"{run_time}s", "--stop-timeout", "5", "--reset-stats",
                    "--host", f"http://127.0.0.1:{web_port}", "--csv", str(prefix), "--only-summary",
                    "--loglevel", "WARNING"],
                   cwd=ROOT, env={**os.environ, "LOAD_MAX_REQUESTS": str(args.max_requests), "LOAD_THINK": args.think},
                   timeout=run_time + 180, check=False)  # locust exits 1 on any failed request


def serve(args, tree: Path, env: dict, log: Path) -> tuple[subprocess.Popen, int]:
    """gunicorn serving `tree`'s code (--pythonpath puts it ahead of the editable install)."""
    web_port = free_port()
    process = start([str(BIN / "gunicorn"), "portal.wsgi:application", "--pythonpath", str(tree), "--chdir", str(tree),
                     "--bind", f"127.0.0.1:{web_port}", "--workers", str(args.workers), "--threads", str(args.threads),
                     "--worker-class", "gthread", "--timeout", "60"], env, log)
    wait_http(f"http://127.0.0.1:{web_port}/healthz")
    return process, web_port


def summary(prefix: Path) -> dict | None:
    rows = {row["Name"]: row for row in csv.DictReader((prefix.parent / f"{prefix.name}_stats.csv").open())}
    total = rows.get("Aggregated")
    if total is None:
        return None
    return {"requests": int(total["Request Count"]), "errors": int(total["Failure Count"]),
            "p50": float(total["50%"]), "p95": float(total["95%"]), "p99": float(total["99%"]),
            "rps": float(total["Requests/s"])}


def load(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="delegate-load-"))
    sandbox_port = free_port()
    env = server_env(sandbox_port)
    processes = []
    try:
        processes.append(start([sys.executable, "-m", "sandbox", "--host", "127.0.0.1",
                                "--port", str(sandbox_port)], env, work / "sandbox.log"))
        wait_http(f"http://127.0.0.1:{sandbox_port}/_sandbox/health")
        create_documents(f"http://127.0.0.1:{sandbox_port}")
        if args.baseline:
            baseline(args, env, work)
            return
        server, web_port = serve(args, ROOT, env, work / "gunicorn.log")
        processes.append(server)
        prefix = work / "locust"
        load_before = os.getloadavg()
        began = time.monotonic()
        run_locust(args, web_port, prefix, args.run_time)
        print(f"\nlocust ran {time.monotonic() - began:.0f}s: {args.users} users thinking {args.think} s, "
              f"gunicorn {args.workers} workers x "
              f"{args.threads} threads, PostgreSQL {URL.rsplit('/', 1)[-1]}; load average before "
              f"{load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
        print(report(prefix))
        errors = (work / "gunicorn.log").read_text(errors="replace").count("Traceback")
        print(f"gunicorn tracebacks: {errors} (logs in {work})")
    finally:
        for process in reversed(processes):
            stop(process)


def baseline(args, env: dict, work: Path) -> None:
    """--baseline REV: the same load on REV (a temporary git worktree) and on the working tree, in
    --slices alternating slices of --run-time seconds each, so a noisy shared machine weighs on
    both alike; prints each slice and the median of each tree's figures with their ratio."""
    import statistics

    baseline_dir = Path(tempfile.mkdtemp(prefix="delegate-baseline-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(baseline_dir), args.baseline],
                   cwd=ROOT, check=True, capture_output=True)
    trees = [(f"baseline {args.baseline}", baseline_dir), ("working tree", ROOT)]
    results: dict[str, list[dict]] = {label: [] for label, _ in trees}
    try:
        print(f"{args.users} users thinking {args.think} s, gunicorn {args.workers} workers x {args.threads} threads, "
              f"{args.slices} slices of {args.run_time} s per tree, alternating\n")
        print("| slice | tree | requests | errors | p50 ms | p95 ms | p99 ms | req/s | load avg |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for number in range(args.slices):
            order = trees if number % 2 == 0 else trees[::-1]
            for label, tree in order:
                server, web_port = serve(args, tree, env, work / f"gunicorn-{number}-{tree.name}.log")
                try:
                    prefix = work / f"locust-{number}-{'base' if tree != ROOT else 'work'}"
                    run_locust(args, web_port, prefix, args.run_time)
                finally:
                    stop(server)
                figures = summary(prefix)
                if figures is None:
                    print(f"| {number + 1} | {label} | no statistics |")
                    continue
                results[label].append(figures)
                print(f"| {number + 1} | {label} | {figures['requests']:,} | {figures['errors']} | {figures['p50']:.0f} | "
                      f"{figures['p95']:.0f} | {figures['p99']:.0f} | {figures['rps']:.1f} | {os.getloadavg()[0]:.1f} |",
                      flush=True)
        print("\n| tree | slices | errors | median p50 ms | median p95 ms | median p99 ms | median req/s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        medians = {}
        for label, _ in trees:
            rows = results[label]
            if not rows:
                continue
            medians[label] = {key: statistics.median(row[key] for row in rows) for key in ("p50", "p95", "p99", "rps")}
            print(f"| {label} | {len(rows)} | {sum(row['errors'] for row in rows)} | {medians[label]['p50']:.0f} | "
                  f"{medians[label]['p95']:.0f} | {medians[label]['p99']:.0f} | {medians[label]['rps']:.1f} |")
        if len(medians) == 2:
            base, new = medians[trees[0][0]], medians["working tree"]
            print("| ratio (working / baseline) | | | " + " | ".join(
                f"{new[key] / base[key]:.2f}" if base[key] else "–" for key in ("p50", "p95", "p99", "rps")) + " |")
        errors = sum(log.read_text(errors="replace").count("Traceback") for log in work.glob("gunicorn-*.log"))
        print(f"\ngunicorn tracebacks: {errors} (logs in {work})")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline_dir)], cwd=ROOT, check=False,
                       capture_output=True)


def queries(args) -> None:
    """SQL statements and time per page for one user of each role (Django's test client, no server)."""
    from sandbox import Sandbox

    sandbox = Sandbox(host="127.0.0.1", port=0).start()
    create_documents(sandbox.url)
    os.environ.update(server_env(int(sandbox.url.rsplit(":", 1)[1])))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from automations.models import AutomationRequest

    User = get_user_model()
    waiting = AutomationRequest.objects.filter(status="submitted", team__name="team07").first()
    done = AutomationRequest.objects.filter(status="succeeded", requester__username="user007").first()
    visits = [("user007", "catalog", "/runbooks/"), ("user007", "my requests", "/requests/"),
              ("user007", "request detail", f"/requests/{done.pk}/"),
              ("lead07", "approval queue", "/approvals/"), ("lead07", "request detail (waiting)", f"/requests/{waiting.pk}/"),
              ("auditor0", "audit search", "/audit/"), ("auditor0", "audit search", "/audit/?actor=user123"),
              ("auditor0", "audit search", "/audit/?resource=i-00000000000000b00"),
              ("auditor0", "my requests (all)", "/requests/?scope=all")]
    print("| page | who | queries | median ms |\n|---|---|---:|---:|")
    for username, name, path in visits:
        client = Client()
        client.force_login(User.objects.get(username=username))
        client.get(path)  # warm caches
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        count, statements = len(captured), list(captured.captured_queries)  # the next request resets the log
        timings = []
        for _ in range(7):  # the median of 7: this machine is shared
            began = time.perf_counter()
            client.get(path)
            timings.append((time.perf_counter() - began) * 1000)
        print(f"| {name} `{path}` | {username} | {count} | {sorted(timings)[3]:.0f} |")
        if args.verbose:
            for query in statements:
                print("    ", query["time"], query["sql"][:300])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=float, default=2,
                        help="people signing in per second; statistics restart once all are in")
    parser.add_argument("--run-time", type=int, default=120, help="seconds of load (bounded)")
    parser.add_argument("--max-requests", type=int, default=60_000, help="stop after this many requests")
    parser.add_argument("--think", default="1,5", help='seconds between clicks, "min,max"; "0,0" saturates')
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queries", action="store_true", help="count SQL per page instead of loading")
    parser.add_argument("--baseline", help="git revision to load alongside the working tree, in alternating slices")
    parser.add_argument("--slices", type=int, default=3, help="with --baseline: slices of --run-time per tree")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if "bench" not in urlparse(URL).path:
        sys.exit("the load database name must contain 'bench'")
    queries(args) if args.queries else load(args)


if __name__ == "__main__":
    main()
