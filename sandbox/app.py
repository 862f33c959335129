"""`Sandbox`: the public face of the local AWS endpoint (server + engine + state + faults)."""

from __future__ import annotations

import signal
import threading
import time
from typing import Self

from . import moto_bridge, world
from .engine import Engine
from .executions import snapshot
from .faults import Faults
from .inventory import SEED_REGIONS, Transitions
from .server import SandboxServer, dispatch
from .state import CallLog, State
from .statuses import TERMINAL

FINISHED = tuple(sorted(TERMINAL))  # what wait_for_execution waits for by default
SAVE_INTERVAL_SECONDS = 0.5  # debounce: at most two state-file writes a second

# moto keeps one world per process. Sandboxes started while another one runs (the portal's
# session sandbox and a test's own) take it over with a fresh seed; when the newer one stops,
# the one still running gets a freshly seeded world back (like a restart of AWS's side).
_live: list[Sandbox] = []
_live_lock = threading.Lock()


class Sandbox:
    """A local AWS endpoint on one port: Delegate's SSM Automation engine, moto for the rest.

    sb = Sandbox(port=0, time_scale=50).start()
    boto3.client("ssm", endpoint_url=sb.url, region_name="eu-west-1", ...)
    sb.stop()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: str | None = None,
        time_scale: float = 1.0,
        account_id: str = "123456789012",
        seed: bool = True,
    ):
        self.host, self.port, self.state_file = host, port, state_file
        self.state = State(account_id=account_id, time_scale=time_scale, seed=seed)
        self.faults = Faults()
        self.calls = CallLog()
        self.engine = Engine(self.state, self.faults)
        self.seed = seed
        self.transitions = Transitions(account_id, lambda: self.state.time_scale)
        self.state.sandbox = self
        self.world_ready = threading.Event()  # moto's world seeded; moto-bound calls wait for it
        self._server: SandboxServer | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # Lifecycle -------------------------------------------------------------------------------------

    def start(self, seed_in_background: bool = False) -> Sandbox:
        """Serve; seed moto's world first (tests), or meanwhile (`python -m sandbox` listens at once;
        /_sandbox/health says "seeding" and calls to moto wait until the world is there)."""
        if self.state_file:
            self.state.load(self.state_file)  # running executions resume where they were
        self._server = SandboxServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._stopping.clear()
        # A short poll interval makes stop() quick (shutdown waits for the next poll).
        self._spawn(lambda: self._server.serve_forever(poll_interval=0.05), "sandbox-http")
        if seed_in_background:
            self._spawn(self._seed_live, "sandbox-seed")
        else:
            self._seed_live()
        self.engine.start()
        if self.state_file:
            self._spawn(self._save_loop, "sandbox-save")
        return self

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        self.faults.release_all()  # blocked calls must finish so the server threads can stop
        # Let a background seed finish: stopping resets moto's world, which must not happen mid-seed.
        if any(t.name == "sandbox-seed" and t.is_alive() for t in self._threads):
            self.world_ready.wait(120)
        # The engine first: scripts its steps run (aws:executeScript, Lambda code) call this sandbox
        # over HTTP, so the server must outlive them.
        self.engine.stop()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        with _live_lock:
            if self in _live:
                was_newest = _live[-1] is self
                _live.remove(self)
                if was_newest and _live:
                    _live[-1]._reset_world()
        if self.state_file:
            self.state.save(self.state_file)

    def _seed_live(self) -> None:
        with _live_lock:
            _live.append(self)
            self._reset_world()

    def _reset_world(self) -> None:
        """A fresh moto world, seeded through this sandbox's own API (world.py).

        A world nobody has changed since it was seeded is reused as it is.
        """
        self.world_ready.clear()
        self.transitions.due.clear()
        self.transitions.history.clear()
        if not (self.seed and moto_bridge.world_is_pristine()):
            moto_bridge.reset()
            if self.seed:
                world.seed(self)
                self.transitions.settle(force=True)  # seeded instances start settled
                moto_bridge.mark_seeded()
        for row in self.transitions.rows(list(SEED_REGIONS)):
            self.transitions.history[row["InstanceId"]] = [row["State"]]
        self.world_ready.set()

    def _save_loop(self) -> None:
        while not self._stopping.wait(SAVE_INTERVAL_SECONDS):
            if self.state.dirty:
                self.state.save(self.state_file)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def dispatch(self, method: str, path: str, query: str, headers, body: bytes) -> tuple[int, list, bytes]:
        """One AWS call answered in this thread, as the front door answers it over HTTP (local_calls.py)."""
        return dispatch(self, method, path, query, headers, body)

    # Assertions for tests --------------------------------------------------------------------------

    def executions(self, region: str | None = None) -> list[dict]:
        """Snapshots of automation executions (oldest first), in one region or all."""
        with self.state.lock:
            if region is None:
                regions = list(self.state.regions.values())
            else:
                regions = [self.state.regions[region]] if region in self.state.regions else []
            found = [snapshot(e, r) for r in regions for e in r.executions.values()]
        return sorted(found, key=lambda e: e["ExecutionStartTime"])

    def execution(self, execution_id: str) -> dict:
        with self.state.lock:
            for region in self.state.regions.values():
                if execution_id in region.executions:
                    return snapshot(region.executions[execution_id], region)
        raise KeyError(f"no automation execution {execution_id}")

    def wait_for_execution(self, execution_id: str, statuses=FINISHED, timeout: float = 30) -> dict:
        """Poll until the execution reaches one of `statuses`; TimeoutError names where it got stuck."""
        deadline = time.monotonic() + timeout
        while True:
            execution = self.execution(execution_id)
            if execution["AutomationExecutionStatus"] in statuses:
                return execution
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"execution {execution_id} is {execution['AutomationExecutionStatus']} "
                    f"(step {execution.get('CurrentStepName')}) after {timeout}s, "
                    f"not one of {statuses}"
                )
            time.sleep(0.01)

    def _region_of(self, instance_id: str) -> str:
        for row in self.transitions.rows(list(SEED_REGIONS)):
            if row["InstanceId"] == instance_id:
                return row["Region"]
        raise KeyError(f"no instance {instance_id}")

    def instance_state(self, instance_id: str) -> str:
        return self.transitions.state_of(self._region_of(instance_id), instance_id)

    def state_history(self, instance_id: str) -> list[str]:
        for row in self.inventory():
            if row["InstanceId"] == instance_id:
                return row["History"]
        raise KeyError(f"no instance {instance_id}")

    def inventory(self, region: str | None = None) -> list[dict]:
        """Instances (from moto) with their id, region, state, type, tags and state history."""
        return self.transitions.rows([region] if region else list(SEED_REGIONS))


def serve_until_signalled(sandbox: Sandbox, announce=print) -> None:
    """Start, print the URL, serve until Ctrl-C or SIGTERM, then stop (saving the state file)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sandbox.start(seed_in_background=True)
    announce(
        f"Delegate sandbox (Delegate's SSM Automation + moto for every other AWS API) listening on {sandbox.url} "
        f"(account {sandbox.state.account_id}, time scale {sandbox.state.time_scale:g}"
        f"{', state file ' + sandbox.state_file if sandbox.state_file else ''})"
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
        announce(
            "Delegate sandbox stopped"
            + (f"; state saved to {sandbox.state_file}" if sandbox.state_file else "")
        )
