"""The demo world in moto: stable ids for seeded resources, and EC2's transitional states over time.

moto holds every EC2 resource; this module only adds what Delegate depends on and moto does
differently:
- **Stable ids.** Tests and the demo name seeded resources with `seeded_id("i", region, "web-1")`,
  a pure function. moto draws ids at random, so while seeding we hand it these ids instead
  (`forced_ids`), and everything created later gets moto's random ids as usual.
- **Transitions that take time.** moto stops, starts and terminates an instance at once. Real
  EC2 passes through stopping / pending / shutting-down for tens of seconds, and runbooks such
  as AWS-RestartEC2Instance wait for that; the demo shows it. `Transitions` puts the instance
  in the transitional state for a (time-scaled) while, then lets it arrive, and refuses what
  EC2 refuses meanwhile (starting a stopping instance).
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time

from . import moto_bridge

STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
# Seconds each transition takes at time_scale 1 (a restart runbook then lasts about ten seconds).
TRANSITIONS = {"stopping": ("stopped", 5.0), "pending": ("running", 4.0), "shutting-down": ("terminated", 5.0)}
# moto's own immediate result -> the transitional state real EC2 shows first.
TRANSITIONAL = {"stopped": "stopping", "running": "pending", "terminated": "shutting-down"}

# (name, team, instance type, initial state); two instances have no Team tag.
SEED_INSTANCES = [
    ("web-1", "platform", "t3.medium", "running"),
    ("web-2", "platform", "t3.medium", "running"),
    ("api-1", "platform", "m5.large", "running"),
    ("api-2", "platform", "m5.large", "stopped"),
    ("etl-1", "data", "r5.large", "running"),
    ("warehouse-1", "data", "r5.xlarge", "running"),
    ("notebook-1", "data", "t3.large", "stopped"),
    ("bastion", None, "t3.micro", "running"),
    (None, None, "t3.nano", "running"),
]
SEED_REGIONS = ("eu-west-1", "us-east-1")


def seeded_id(prefix: str, region: str, name: str) -> str:
    """Deterministic ids, so tests and the demo can name seeded resources across restarts."""
    return f"{prefix}-0" + hashlib.sha256(f"{region}/{name}".encode()).hexdigest()[:16]


# Stable ids while seeding ---------------------------------------------------------------------------

_forced: dict[str, collections.deque] = {kind: collections.deque() for kind in ("i", "vol", "snap", "ami")}
_forced_lock = threading.Lock()
_installed = False


def _install_id_hooks() -> None:
    """Make moto's EC2 id generators take a queued id first (falling back to random ones)."""
    global _installed
    if _installed:
        return
    from moto.ec2.models import amis, elastic_block_store, instances

    def hook(module, attribute: str, kind: str) -> None:
        original = getattr(module, attribute)

        def next_id() -> str:
            with _forced_lock:
                queue = _forced[kind]
                if queue:
                    return queue.popleft()
            return original()

        setattr(module, attribute, next_id)

    hook(instances, "random_instance_id", "i")
    hook(elastic_block_store, "random_volume_id", "vol")
    hook(elastic_block_store, "random_snapshot_id", "snap")
    hook(amis, "random_ami_id", "ami")
    _installed = True


class forced_ids:
    """`with forced_ids(i=[...], vol=[...]):` the next resources moto creates get these ids."""

    def __init__(self, **ids: list[str]):
        self.ids = ids

    def __enter__(self):
        _install_id_hooks()
        with _forced_lock:
            for kind, values in self.ids.items():
                _forced[kind].extend(values)
        return self

    def __exit__(self, *exc):
        with _forced_lock:
            for kind in self.ids:
                _forced[kind].clear()


# Transitional states --------------------------------------------------------------------------------


class Transitions:
    """Instances in a transitional state, when they arrive, and every instance's state history."""

    def __init__(self, account_id: str, time_scale_of):
        self.account_id = account_id
        self._time_scale_of = time_scale_of  # a callable: the time scale can change while running
        self.lock = threading.RLock()
        self.due: dict[tuple[str, str], tuple[str, float]] = {}  # (region, id) -> (final state, when)
        self.history: dict[str, list[str]] = {}

    def _instance(self, region: str, instance_id: str):
        backend = moto_bridge.ec2_backend(self.account_id, region)
        for reservation in backend.reservations.values():
            for instance in reservation.instances:
                if instance.id == instance_id:
                    return instance
        return None

    def state_of(self, region: str, instance_id: str) -> str | None:
        self.settle()
        instance = self._instance(region, instance_id)
        return instance.state if instance is not None else None

    def _set(self, instance, name: str) -> None:
        instance._state.name = name
        instance._state.code = STATE_CODES[name]
        history = self.history.setdefault(instance.id, [])
        if not history or history[-1] != name:
            history.append(name)

    def remember(self, region: str, instance_id: str) -> None:
        """Start the history of an instance at its current state."""
        with self.lock:
            instance = self._instance(region, instance_id)
            if instance is not None and instance.id not in self.history:
                self.history[instance.id] = [instance.state]

    def before(self, region: str, operation: str, instance_ids: list[str]) -> str | None:
        """An IncorrectInstanceState message if EC2 would refuse this call now, else None."""
        self.settle()
        if operation not in ("StartInstances", "StopInstances", "ModifyInstanceAttribute"):
            return None
        with self.lock:
            found = {i: self._instance(region, i) for i in instance_ids}
            if any(instance is None for instance in found.values()):
                return None  # moto answers InvalidInstanceID.NotFound itself
            for instance_id, instance in found.items():
                state = instance.state
                self.history.setdefault(instance.id, [state])
                refused = (
                    (operation == "StartInstances" and state in ("stopping", "shutting-down", "terminated"))
                    or (operation == "StopInstances" and state in ("pending", "shutting-down", "terminated"))
                    or (operation == "ModifyInstanceAttribute" and state != "stopped")
                )
                if refused:
                    verb = {"StartInstances": "started", "StopInstances": "stopped"}.get(operation, "modified")
                    return (
                        f"The instance '{instance_id}' is not in a state from which it can be {verb} "
                        f"(it is {state})."
                    )
        return None

    def after(self, region: str, operation: str, instance_ids: list[str], before_states: dict) -> None:
        """moto changed the state at once; show the transitional state for a while instead."""
        scale = float(self._time_scale_of())
        with self.lock:
            for instance_id in instance_ids:
                instance = self._instance(region, instance_id)
                if instance is None:
                    continue
                final = instance.state
                if before_states.get(instance_id) == final or final not in TRANSITIONAL:
                    continue
                transitional = TRANSITIONAL[final]
                self._set(instance, transitional)
                seconds = TRANSITIONS[transitional][1] / scale
                self.due[(region, instance_id)] = (final, time.time() + seconds)

    def states(self, region: str, instance_ids: list[str]) -> dict:
        with self.lock:
            found = {i: self._instance(region, i) for i in instance_ids}
            return {i: instance.state for i, instance in found.items() if instance is not None}

    def settle(self, now: float | None = None, force: bool = False) -> None:
        """Let every instance whose transition is due arrive in its final state."""
        now = time.time() if now is None else now
        with self.lock:
            for key, (final, when) in list(self.due.items()):
                if force or when <= now:
                    instance = self._instance(*key)
                    if instance is not None:
                        self._set(instance, final)
                    del self.due[key]

    def rows(self, regions: list[str]) -> list[dict]:
        """Instances with their id, region, state, type, tags and state history (the control API)."""
        self.settle()
        rows = []
        with self.lock:
            for region in regions:
                backend = moto_bridge.ec2_backend(self.account_id, region)
                for reservation in backend.reservations.values():
                    for instance in reservation.instances:
                        rows.append(
                            {
                                "InstanceId": instance.id,
                                "Region": region,
                                "State": instance.state,
                                "InstanceType": instance.instance_type,
                                "Tags": dict(backend.tags.get(instance.id, {})),
                                "History": list(self.history.get(instance.id, [instance.state])),
                            }
                        )
        return rows
