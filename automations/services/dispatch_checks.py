"""The AWS reads a dispatch makes before Start, asked at the same time instead of one after another.

Right before StartAutomationExecution the worker re-checks, on the shared read-only session: the
targets are still in the team's scope (EC2/CloudFormation tags, the policy's tag rules), SSM still
serves the bound content under that version (DescribeDocument), and the execution preview still
gives the bound figures (StartExecutionPreview, GetExecutionPreview). None depends on another, so
they run in threads of a small per-process pool while the worker's own thread does the database
work in between. The caller judges the answers in the order it always did (scope, content,
preview), so which refusal wins, and what is audited, do not depend on which AWS answered first.

The threads touch AWS only: everything they read from the request (team, account, runbook,
version, the team's policy) was loaded by the worker's thread before. If something there ever
reaches the database anyway, the thread's own connection is closed when it ends.
"""
from __future__ import annotations

import contextvars
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all

from django.db import connections

from automations import aws, policy
from automations.aws import inventory, pacing
from automations.models import AutomationRequest
from automations.services import content, execution_preview

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0


def _executor() -> ThreadPoolExecutor:
    """One pool per process (a forked child must not inherit its parent's threads)."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="dispatch-check")
            _pool_pid = os.getpid()
        return _pool


class Checks:
    """The futures of one dispatch's reads; `result(name)` re-raises what the read raised."""

    def __init__(self) -> None:
        self._futures: dict[str, Future] = {}
        self.timings_ms: dict[str, float] = {}

    def submit(self, name: str, fn, *args) -> None:
        context = contextvars.copy_context()  # the log context (request id, automation request)

        def run():
            began = time.perf_counter()
            try:
                return context.run(fn, *args)
            finally:
                waits = pacing.last_waits()
                self.timings_ms[name] = (time.perf_counter() - began) * 1000
                self.timings_ms.update({f"paced_{op}": seconds * 1000 for op, seconds in waits.items()})
                connections.close_all()  # this thread's own, if any: nothing is left open

        self._futures[name] = _executor().submit(run)

    def wanted(self, name: str) -> bool:
        return name in self._futures

    def wait(self) -> None:
        """Every read has ended (none keeps calling AWS after the attempt is over)."""
        wait_all(list(self._futures.values()))

    def result(self, name: str):
        return self._futures[name].result()


def targets_outside(request: AutomationRequest, allowlist: frozenset[str]) -> list[str]:
    """The targets no longer in the team's scope or the policy's per-target rules (raises AwsError)."""
    outside = inventory.out_of_scope(request.resources, tag=request.team.scope_tag, region=request.region,
                                     role_arn=request.account.dispatch_role_arn, allowlist=allowlist)
    return outside + [r for r in policy.targets_outside_policy(request) if r not in outside]  # policy tags, id patterns


def start(request: AutomationRequest, *, scope: bool, allowlist: frozenset[str] = frozenset()) -> Checks:
    """Ask AWS everything the dispatch re-checks before Start, all at once."""
    services = ("ssm", "ec2") + (("cloudformation",) if scope and any(
        inventory.kind_of(r) == "stack" for r in request.resources) else ())
    try:
        aws.read_clients_ready(region=request.region, role_arn=request.account.dispatch_role_arn, services=services)
    except Exception:  # noqa: BLE001 - the read itself meets it again, and reports it as before
        pass
    checks = Checks()
    if scope:
        checks.submit("scope", targets_outside, request, allowlist)
    checks.submit("content", content.live_hash, request)
    if execution_preview.bound_figures(request) is not None:
        checks.submit("preview", execution_preview.ask, request)
    return checks
