"""Run runbook Python for real: aws:executeScript scripts and Lambda functions, in a subprocess.

The code runs in a fresh Python process (this interpreter, so boto3 is there) with boto3 pointed
at the sandbox (`AWS_ENDPOINT_URL`), so whatever it does happens to moto's state. The engine
must not wait on it while holding the state lock, so a run is started on one tick and polled on
later ones; the process handles live here (not in the JSON state), keyed by step execution id.
A process lost in a restart fails its step rather than pretending.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile

RESULT_MARK = "__DELEGATE_SANDBOX_RESULT__"
# Imports the handler's module from the code directory and calls it as AWS would.
RUNNER = r"""
import importlib, json, sys, traceback
spec = json.load(sys.stdin)
sys.path.insert(0, spec["dir"])
try:
    module = importlib.import_module(spec["module"])
    handler = getattr(module, spec["function"])
    result = handler(spec["event"], spec["context"])
    print("\n" + spec["mark"] + json.dumps({"ok": True, "result": result}, default=str))
except BaseException as exc:
    print("\n" + spec["mark"] + json.dumps({"ok": False, "error": type(exc).__name__ + ": " + str(exc),
          "trace": traceback.format_exc()[-2000:]}))
"""


class Run:
    def __init__(self, process: subprocess.Popen, directory: str, deadline: float):
        self.process, self.directory, self.deadline = process, directory, deadline
        self.output = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        self.output = self.process.communicate()[0] or ""

    def finished(self) -> bool:
        return self.process.poll() is not None and not self._reader.is_alive()

    def result(self) -> tuple[bool, object, str]:
        """(ok, result or error text, logs)."""
        logs, _, tail = self.output.rpartition(RESULT_MARK)
        if not _:
            return False, f"the process ended (exit code {self.process.returncode}) without a result", self.output[-4000:]
        outcome = json.loads(tail.strip().splitlines()[0])
        if outcome["ok"]:
            return True, outcome["result"], logs[-4000:]
        return False, f"{outcome['error']}\n{outcome.get('trace', '')}", logs[-4000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


_runs: dict[str, Run] = {}
_lock = threading.Lock()


def start(key: str, files: dict[str, bytes], handler: str, event, context: dict, url: str, region: str,
          deadline: float) -> None:
    """Write the code files to a temp dir and start `module.function(event, context)` there."""
    directory = tempfile.mkdtemp(prefix="delegate-sandbox-code-")
    for name, content in files.items():
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(content)
    module, _, function = handler.rpartition(".")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="AKIASANDBOXENGINE000",
        AWS_SECRET_ACCESS_KEY="sandbox",
        AWS_DEFAULT_REGION=region,
        AWS_REGION=region,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONDONTWRITEBYTECODE="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=directory,
        env=env,
    )
    spec = {"dir": directory, "module": module, "function": function, "event": event, "context": context,
            "mark": RESULT_MARK}
    process.stdin.write(json.dumps(spec, default=str))
    process.stdin.close()
    process.stdin = None  # communicate() in the reader thread must not touch it again
    with _lock:
        _runs[key] = Run(process, directory, deadline)


def get(key: str) -> Run | None:
    with _lock:
        return _runs.get(key)


def finish(key: str) -> None:
    with _lock:
        run = _runs.pop(key, None)
    if run:
        run.kill()


def unzip(code: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(code)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
