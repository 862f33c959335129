"""The sandbox with moto in place: start-up time, memory with the demo world, a two-step runbook's time.

    .venv/bin/python bench/sandbox.py [--time-scale 1] [--runs 3]

Starts `python -m sandbox` as a real process (the demo's time scale, 1, by default) and prints:
1. time to answer: from spawning the process to the first `/_sandbox/health` answer (target <= 3 s),
   and to the seeded world answering `ec2 describe-instances` (moto's world ready);
2. RSS of the sandbox process with the demo world seeded (target <= 300 MB, read from /proc);
3. a two-step runbook (aws:executeAwsApi DescribeInstances, then aws:createTags) from
   StartAutomationExecution to Success, best of --runs (target <= 2 s).
Prints the figures; docs/benchmarks.md records them by hand with the command. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", str(port), "--time-scale", str(args.time_scale)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_sandbox/health", timeout=1) as response:
                    json.load(response)
                break
            except OSError:
                if time.monotonic() - began > 120:
                    raise SystemExit("the sandbox did not answer within 120 s") from None
                time.sleep(0.02)
        answered = time.monotonic() - began
        keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench", "region_name": "eu-west-1"}
        ec2 = boto3.client("ec2", endpoint_url=url, **keys)
        ssm = boto3.client("ssm", endpoint_url=url, **keys)
        count = sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"])
        world = time.monotonic() - began
        memory = rss_mb(process.pid)
        ssm.create_document(Name="Bench-TwoSteps", DocumentType="Automation", Content=json.dumps(RUNBOOK))
        timings = []
        for _ in range(args.runs):
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
        print(f"python -m sandbox answers /_sandbox/health after {answered:.2f} s (target <= 3 s)")
        print(f"seeded world answers ec2 describe-instances ({count} instances) after {world:.2f} s")
        print(f"RSS with the demo world: {memory:.0f} MB (target <= 300 MB)")
        print(f"two-step runbook at time scale {args.time_scale:g}: best {min(timings):.2f} s, "
              f"worst {max(timings):.2f} s over {args.runs} runs (target <= 2 s)")
    finally:
        process.terminate()
        process.wait(timeout=20)


if __name__ == "__main__":
    main()
