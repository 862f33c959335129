"""Everything the sandbox remembers, behind one lock, and how it is saved to disk.

One re-entrant lock guards all of it: API handlers and the engine's ticks are short, so a
single lock is simpler than fine-grained ones and cannot deadlock. Every record is a plain
JSON-ready dict, so persistence is a `json.dumps` of the whole thing; keys starting with `_`
are internal bookkeeping that the API never shows.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field

from .statuses import is_terminal

# Which kinds of record a region holds. "tokens" are StartAutomationExecution ClientTokens;
# "previews" are StartExecutionPreview results.
# AWS resources (EC2, S3, RDS...) are not here: moto holds them (moto_bridge.py, world.py).
REGION_KINDS = ("documents", "executions", "tokens", "previews")


class RegionState:
    """One region's documents and automation executions (AWS state is regional)."""

    def __init__(self, state: State, name: str):
        self.state = state
        self.name = name
        for kind in REGION_KINDS:
            setattr(self, kind, {})

    @property
    def account_id(self) -> str:
        return self.state.account_id

    def scaled(self, seconds: float) -> float:
        """A duration from a runbook or from EC2, shortened by the sandbox's time_scale."""
        return float(seconds) / self.state.time_scale

    def to_dict(self) -> dict:
        return {kind: getattr(self, kind) for kind in REGION_KINDS}


class State:
    def __init__(self, account_id: str = "123456789012", time_scale: float = 1.0, seed: bool = True):
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.lock = threading.RLock()
        self.account_id = account_id
        self.time_scale = float(time_scale)
        self.seed = seed
        self.regions: dict[str, RegionState] = {}
        self.sessions: dict[str, dict] = {}  # STS access key id -> session (sts.py)
        # IAM role ARN -> MaxSessionDuration in seconds; roles not listed allow the API maximum.
        self.role_max_session_duration: dict[str, int] = {}
        # (region, execution id) of executions the engine still has to drive; derived, not saved.
        self.active: dict[tuple[str, str], None] = {}
        self.dirty = False
        self._save_lock = threading.Lock()
        self.sandbox = None  # the Sandbox serving this state (its URL and moto world); set by app.py

    def region(self, name: str) -> RegionState:
        with self.lock:
            region = self.regions.get(name)
            if region is None:
                region = self.regions[name] = RegionState(self, name)
                if self.seed:
                    # Imported here: the seeders need RegionState, and this module is imported first.
                    from . import document_store

                    document_store.seed(region)
                self.dirty = True
            return region

    def mark_dirty(self) -> None:
        self.dirty = True

    # Persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": 1,
            "account_id": self.account_id,
            "saved_at": time.time(),
            "sessions": self.sessions,
            "role_max_session_duration": self.role_max_session_duration,
            "regions": {name: region.to_dict() for name, region in self.regions.items()},
        }

    def load_dict(self, data: dict) -> None:
        with self.lock:
            self.sessions = data.get("sessions", {})
            self.role_max_session_duration = data.get("role_max_session_duration", {})
            self.regions = {}
            for name, kinds in data.get("regions", {}).items():
                region = RegionState(self, name)
                for kind in REGION_KINDS:
                    setattr(region, kind, kinds.get(kind, {}))
                self.regions[name] = region
            self.active = {
                (name, execution_id): None
                for name, region in self.regions.items()
                for execution_id, execution in region.executions.items()
                if not is_terminal(execution["AutomationExecutionStatus"])
            }
            self.dirty = False

    def save(self, path: str) -> None:
        """Write atomically: a temp file in the same directory, then rename over the old one."""
        with self._save_lock:
            with self.lock:
                text = json.dumps(self.to_dict(), separators=(",", ":"), default=str)
                self.dirty = False
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".sandbox-state-", dir=directory)
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise

    def load(self, path: str) -> bool:
        if not os.path.exists(path):
            return False
        with open(path) as handle:
            self.load_dict(json.load(handle))
        return True


@dataclass
class Caller:
    """Who made a request, from the access key in its SigV4 Authorization header."""

    access_key_id: str
    arn: str
    session: dict | None = None  # the STS session behind an ASIA key, if we issued it

    def _get(self, key, default=None):
        return (self.session or {}).get(key, default)

    @property
    def session_name(self) -> str | None:
        return self._get("RoleSessionName")

    @property
    def source_identity(self) -> str | None:
        return self._get("SourceIdentity")

    @property
    def session_tags(self) -> list[dict]:
        return list(self._get("Tags", []))

    @property
    def role_arn(self) -> str | None:
        return self._get("RoleArn")


@dataclass
class Request:
    """One API call as the operation functions see it, whatever the wire protocol was."""

    state: State
    region: RegionState
    service: str
    operation: str
    params: dict
    caller: Caller
    request_id: str
    faults: object = None
    extra: dict = field(default_factory=dict)


class CallLog(list):
    """The thread-safe record of every call (`Sandbox.calls`): a list with locked writes."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def append(self, item) -> None:
        with self._lock:
            super().append(item)

    def clear(self) -> None:
        with self._lock:
            super().clear()

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self)

    def of(self, operation: str) -> list[dict]:
        return [call for call in self.snapshot() if call["operation"] == operation]
