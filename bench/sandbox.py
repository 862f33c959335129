"""The sandbox with moto in place: start-up time, memory with the demo world, a two-step runbook's time.

    .venv/bin/python bench/sandbox.py [--time-scale 1] [--runs 5] [--rounds 1] [--against DIR]

Starts `python -m sandbox` as a real process (the demo's time scale, 1, by default) and prints:
1. time to ready: from spawning the process to `/_sandbox/health` saying the seeded world is there
   (target <= 3 s); also the first answer of any kind, the first `ec2 describe-instances`, and the
   CPU seconds the process used until ready (user + system, from /proc: what a busy machine does
   not inflate as much as wall time);
2. RSS of the sandbox process with the demo world seeded (target <= 300 MB, read from /proc);
3. a two-step runbook (aws:executeAwsApi DescribeInstances, then aws:createTags) from
   StartAutomationExecution to Success, --runs times in a row: first, best, median, worst (target <= 2 s).

`--against DIR` runs another checkout's sandbox (e.g. `git worktree add /tmp/sb-old <commit>`) and this
one alternately, --rounds times (the order swaps every round), and prints both side by side: on a
shared machine only figures taken in the same run compare. Not part of the tests (no timings in tests).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.inventory import seeded_id  # noqa: E402

RUNBOOK = {
    "schemaVersion": "0.3",
    "parameters": {"InstanceId": {"type": "String"}},
    "mainSteps": [
        {"name": "describe", "action": "aws:executeAwsApi",
         "inputs": {"Service": "ec2", "Api": "DescribeInstances", "InstanceIds": ["{{ InstanceId }}"]},
         "outputs": [{"Name": "State", "Selector": "$.Reservations[0].Instances[0].State.Name", "Type": "String"}]},
        {"name": "tag", "action": "aws:createTags",
         "inputs": {"ResourceType": "EC2", "ResourceIds": ["{{ InstanceId }}"],
                    "Tags": [{"Key": "Benchmarked", "Value": "{{ describe.State }}"}]}},
    ],
}
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def health(url: str) -> dict | None:
    """The health answer (200, or 503 while seeding), None while nothing listens."""
    try:
        with urllib.request.urlopen(f"{url}/_sandbox/health", timeout=1) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return json.load(error)
    except OSError:
        return None


def measure(root: Path, time_scale: float, runs: int) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", str(port), "--time-scale", str(time_scale)],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    figures: dict = {}
    try:
        while True:
            answer = health(url)
            if answer is not None and "answered" not in figures:
                figures["answered"] = time.monotonic() - began
            if answer is not None and answer.get("world") == "ready":
                figures["ready"] = time.monotonic() - began
                figures["cpu"] = cpu_seconds(process.pid)
                break
            if time.monotonic() - began > 180:
                raise SystemExit(f"{root}: the sandbox was not ready within 180 s")
            time.sleep(0.02)
        keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench", "region_name": "eu-west-1"}
        ec2 = boto3.client("ec2", endpoint_url=url, **keys)
        ssm = boto3.client("ssm", endpoint_url=url, **keys)
        figures["instances"] = sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"])
        figures["world"] = time.monotonic() - began
        figures["rss"] = rss_mb(process.pid)
        ssm.create_document(Name="Bench-TwoSteps", DocumentType="Automation", Content=json.dumps(RUNBOOK))
        timings = []
        for _ in range(runs):
            start = time.monotonic()
            execution_id = ssm.start_automation_execution(
                DocumentName="Bench-TwoSteps", Parameters={"InstanceId": [seeded_id("i", "eu-west-1", "web-1")]}
            )["AutomationExecutionId"]
            while True:
                status = ssm.get_automation_execution(AutomationExecutionId=execution_id)["AutomationExecution"][
                    "AutomationExecutionStatus"]
                if status not in ("Pending", "InProgress"):
                    break
                time.sleep(0.01)
            timings.append(time.monotonic() - start)
            assert status == "Success", status
        figures["runs"] = timings
        figures["rss_after"] = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return figures


def lines(figures: dict, time_scale: float) -> list[tuple[str, str]]:
    runs = figures["runs"]
    return [
        ("/_sandbox/health first answers (any status)", f"{figures['answered']:.2f} s"),
        ("/_sandbox/health says the seeded world is ready (target <= 3 s)", f"{figures['ready']:.2f} s"),
        ("CPU used by the sandbox process until ready (user+sys)", f"{figures['cpu']:.2f} s"),
        (f"first ec2 describe-instances answered ({figures['instances']} instances)", f"{figures['world']:.2f} s"),
        ("RSS with the demo world (target <= 300 MB)", f"{figures['rss']:.0f} MB"),
        ("RSS after the runbooks", f"{figures['rss_after']:.0f} MB"),
        (f"two-step runbook at time scale {time_scale:g}, first run (target <= 2 s)", f"{runs[0]:.2f} s"),
        (f"two-step runbook, best / median / worst of {len(runs)}",
         f"{min(runs):.2f} / {statistics.median(runs):.2f} / {max(runs):.2f} s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--against", type=Path, help="another checkout to measure alternately with this one")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    roots = {"this": ROOT} if args.against is None else {"against": args.against.resolve(), "this": ROOT}
    results: dict[str, list[dict]] = {name: [] for name in roots}
    for round_ in range(args.rounds):
        order = list(roots) if round_ % 2 == 0 else list(reversed(roots))
        for name in order:
            figures = measure(roots[name], args.time_scale, args.runs)
            results[name].append(figures)
            print(f"round {round_ + 1} {name}: ready {figures['ready']:.2f} s, cpu {figures['cpu']:.2f} s, "
                  f"rss {figures['rss']:.0f} MB, runbook first {figures['runs'][0]:.2f} s "
                  f"worst {max(figures['runs']):.2f} s", flush=True)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name, root in roots.items():
        for round_, figures in enumerate(results[name]):
            print(f"\n{name} ({root}), round {round_ + 1}:")
            for label, value in lines(figures, args.time_scale):
                print(f"  {label}: {value}")
    if args.rounds > 1 or len(roots) > 1:
        print("\nmedian over rounds (worst runbook: worst over every run of every round):")
        names = list(roots)
        print("  measure | " + " | ".join(names))
        for key, label in (("ready", "health says ready, s"), ("cpu", "CPU until ready, s"),
                           ("world", "first describe-instances, s"), ("rss", "RSS with the world, MB")):
            print(f"  {label} | " + " | ".join(
                f"{statistics.median(f[key] for f in results[n]):.2f}" for n in names))
        print("  runbook first run (median), s | " + " | ".join(
            f"{statistics.median(f['runs'][0] for f in results[n]):.2f}" for n in names))
        print("  runbook median of all runs, s | " + " | ".join(
            f"{statistics.median(t for f in results[n] for t in f['runs']):.2f}" for n in names))
        print("  runbook worst of all runs, s | " + " | ".join(
            f"{max(t for f in results[n] for t in f['runs']):.2f}" for n in names))


if __name__ == "__main__":
    main()
