"""Where one operation's wall time went, phase by phase: for a log line, never for the audit.

    phases = Phases()
    ...; phases.mark("claim")   # the time since the previous mark (or creation) is "claim"
    log.info("dispatch.started", phases_ms=phases.ms)

bench/dispatch.py reads these from the workers' log lines (docs/benchmarks.md, "Dispatch").
"""
from __future__ import annotations

import time


class Phases:
    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.ms: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = round(self.ms.get(name, 0.0) + (now - self._last) * 1000, 1)
        self._last = now

    def add(self, timings_ms: dict) -> None:
        """Phases measured elsewhere (the gateway's AssumeRole / client / call split)."""
        for name, value in (timings_ms or {}).items():
            self.ms[name] = round(float(value), 1)
