"""Server time and SQL statements per page for one user, side by side with a baseline revision.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/delegate_bench_load \
        .venv/bin/python bench/pages.py [--baseline REV] [--rounds 15] [-v] [--profile PAGE]

Needs the load database of bench/load/seed.py. Each code tree (the working tree, and with
--baseline the revision REV checked out in a temporary `git worktree`) runs in a process of its own
against the same database and the same sandbox (AWS); the two are asked for the pages alternately,
round after round, so a noisy shared machine slows both alike. Prints per page the SQL statement
count, the median and p90 wall milliseconds and the median CPU milliseconds of the Django process
(time.process_time: excludes waiting for a core and PostgreSQL's own time, so it is the steadier
figure on a loaded machine) of each tree, and the ratios working/baseline.

"Server time" is Django's test client calling the whole stack in process (middleware, session,
view, templates), DEBUG off, no network. Statements are counted once per page (a counting run is
not timed). Asserts nothing; the figures go to docs/benchmarks.md by hand. --profile PAGE prints
cProfile's top functions for that page in the working tree instead.

Caveat: both trees use the one database, so an index added by a migration of the working tree
helps the baseline too; bench/pages.py says so when the migration sets differ.
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
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/delegate_bench_load")

# (who, page, path); {waiting} and {done} are filled in from the data.
VISITS = [
    ("user007", "catalog", "/runbooks/"),
    ("user007", "my requests", "/requests/"),
    ("user007", "request detail", "/requests/{done}/"),
    ("lead07", "approval queue", "/approvals/"),
    ("lead07", "waiting request as lead", "/requests/{waiting}/"),
    ("auditor0", "audit search", "/audit/"),
    ("auditor0", "audit search actor", "/audit/?actor=user123"),
    ("auditor0", "all requests (auditor)", "/requests/?scope=all"),
]


#
# The child: one code tree, answering "visit N" with its time, over stdin/stdout.
#

def serve(tree: str, sandbox_port: int) -> None:
    sys.path.insert(0, tree)  # ahead of the editable install's finder: this tree's code
    os.chdir(tree)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "portal.settings", "DATABASE_URL": URL, "DJANGO_DEBUG": "false",
        "LOG_LEVEL": "WARNING", "DELEGATE_LOGIN_LOCKOUT": "false", "REDIS_URL": "",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{sandbox_port}", "AWS_ACCESS_KEY_ID": "AKIDLOADLOADLOAD0000",
        "AWS_SECRET_ACCESS_KEY": "load-secret-not-real", "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true", "DELEGATE_VAR_DIR": tempfile.mkdtemp(prefix="delegate-pages-"),
    })
    import django

    django.setup()
    import automations
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from automations.models import AutomationRequest

    assert automations.__file__.startswith(tree), (automations.__file__, tree)
    waiting = AutomationRequest.objects.filter(status="submitted", team__name="team07").order_by("id").first()
    done = AutomationRequest.objects.filter(status="succeeded", requester__username="user007").order_by("id").first()
    User = get_user_model()
    clients: dict[str, Client] = {}

    def client_for(username: str) -> Client:
        if username not in clients:
            clients[username] = Client()
            clients[username].force_login(User.objects.get(username=username))
        return clients[username]

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        username, _name, path = VISITS[ask["visit"]]
        path = path.format(waiting=waiting.pk, done=done.pk)
        client = client_for(username)
        if ask.get("count"):
            with CaptureQueriesContext(connection) as captured:
                response = client.get(path)
            answer = {"status": response.status_code, "queries": len(captured),
                      "sql": [f"{float(q['time']) * 1000:6.1f} ms  {q['sql'][:300]}" for q in captured.captured_queries] if ask.get("sql") else []}
        elif ask.get("profile"):
            import cProfile
            import io
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(5):
                client.get(path)
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("BENCH_PROFILE_SORT", "cumulative"))
            # BENCH_PROFILE_MATCH=automations/ shows only our own functions (a regular expression pstats applies).
            stats.print_stats(os.environ.get("BENCH_PROFILE_MATCH", ""), 45)
            answer = {"profile": out.getvalue()}
        else:
            began, cpu = time.perf_counter(), time.process_time()
            response = client.get(path)
            answer = {"status": response.status_code, "ms": (time.perf_counter() - began) * 1000,
                      "cpu": (time.process_time() - cpu) * 1000}
        print(json.dumps(answer), flush=True)


#
# The parent: worktree, sandbox, two children, interleaved rounds.
#

class Tree:
    def __init__(self, label: str, path: Path, sandbox_port: int):
        self.label, self.path = label, path
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "pages.py"), "--serve", str(path), "--sandbox-port", str(sandbox_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=path)
        assert json.loads(self.process.stdout.readline()).get("ready"), f"{label} did not start"

    def ask(self, **question) -> dict:
        self.process.stdin.write(json.dumps(question) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if "status" in answer and answer["status"] != 200:
            raise SystemExit(f"{self.label}: {VISITS[question['visit']]} answered {answer['status']}")
        return answer

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def create_documents(url: str) -> None:
    """The seeded runbooks (Load-Runbook00..29, bench/load/seed.py) as our own documents in the
    sandbox, so the approver's page finds each version's SSM hash as it would in AWS."""
    import boto3

    ssm = boto3.client("ssm", endpoint_url=url, region_name="eu-west-1", aws_access_key_id="AKIDLOADLOADLOAD0000",
                       aws_secret_access_key="load-secret-not-real")
    content = (ROOT / "sandbox/documents/amazon/aws-RestartEC2Instance.json").read_text()
    for number in range(30):
        ssm.create_document(Name=f"Load-Runbook{number:02d}", Content=content, DocumentType="Automation",
                            DocumentFormat="JSON")


def migrations(tree: Path) -> set[str]:
    return {p.name for p in (tree / "automations" / "migrations").glob("0*.py")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="git revision to measure alongside the working tree")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", help="page name: print cProfile's top functions for it (working tree)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each page's SQL (working tree)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "bench" not in urlparse(URL).path:
        sys.exit("the load database name must contain 'bench'")
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("DELEGATE_AUDIT_DIGEST_KEY", "ed25519:" + base64.b64encode(os.urandom(32)).decode())
    if args.serve:
        serve(args.serve, args.sandbox_port)
        return 0

    sys.path.insert(0, str(ROOT))
    from sandbox import Sandbox

    sandbox = Sandbox(host="127.0.0.1", port=0).start()
    port = int(sandbox.url.rsplit(":", 1)[1])
    create_documents(sandbox.url)
    baseline_dir = None
    trees: list[Tree] = []
    try:
        if args.baseline:
            baseline_dir = Path(tempfile.mkdtemp(prefix="delegate-baseline-")) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", str(baseline_dir), args.baseline],
                           cwd=ROOT, check=True, capture_output=True)
            trees.append(Tree(f"baseline {args.baseline}", baseline_dir, port))
        trees.append(Tree("working tree", ROOT, port))
        work = trees[-1]
        if args.profile:
            visit = next(i for i, v in enumerate(VISITS) if v[1] == args.profile)
            work.ask(visit=visit)
            print(work.ask(visit=visit, profile=True)["profile"])
            return 0
        if baseline_dir is not None and migrations(baseline_dir) != migrations(ROOT):
            print(f"note: migrations differ ({sorted(migrations(ROOT) ^ migrations(baseline_dir))}); "
                  "the database has the working tree's, so the baseline is measured with them too\n")
        counts = {}
        for index in range(len(VISITS)):
            for tree in trees:
                tree.ask(visit=index)  # warm: templates, caches, connections
                counts[tree.label, index] = tree.ask(visit=index, count=True, sql=args.verbose)
        samples: dict[tuple[str, int], list[float]] = {key: [] for key in counts}
        cpu: dict[tuple[str, int], list[float]] = {key: [] for key in counts}
        load_before = os.getloadavg()[0]
        for round_ in range(args.rounds):
            for index in range(len(VISITS)):
                # Alternate which tree goes first, so neither always runs right after the other.
                for tree in (trees if round_ % 2 == 0 else trees[::-1]):
                    answer = tree.ask(visit=index)
                    samples[tree.label, index].append(answer["ms"])
                    cpu[tree.label, index].append(answer["cpu"])
        print(f"{args.rounds} rounds, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores, database {urlparse(URL).path.lstrip('/')}\n")
        head = "| page | who |"
        rule = "|---|---|"
        for tree in trees:
            head += f" {tree.label}: queries | median ms | p90 ms | CPU ms |"
            rule += "---:|---:|---:|---:|"
        if len(trees) == 2:
            head += " ratio (median) | ratio (CPU) |"
            rule += "---:|---:|"
        print(head + "\n" + rule)
        for index, (username, name, _path) in enumerate(VISITS):
            line = f"| {name} | {username} |"
            medians, cpus = [], []
            for tree in trees:
                values = sorted(samples[tree.label, index])
                medians.append(statistics.median(values))
                cpus.append(statistics.median(cpu[tree.label, index]))
                p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
                line += f" {counts[tree.label, index]['queries']} | {medians[-1]:.1f} | {p90:.1f} | {cpus[-1]:.1f} |"
            if len(trees) == 2:
                line += f" {medians[1] / medians[0]:.2f} | {cpus[1] / cpus[0]:.2f} |"
            print(line)
        if args.verbose:
            for index, (_u, name, _p) in enumerate(VISITS):
                print(f"\n## {name}")
                for sql in counts[work.label, index]["sql"]:
                    print("   ", sql)
    finally:
        for tree in trees:
            tree.close()
        sandbox.stop()
        if baseline_dir is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline_dir)], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
