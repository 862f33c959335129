"""Wall-clock claims the test suite checks by counting instead (tests must not depend on a quiet machine).

    .venv/bin/python bench/timings.py          # prints each claim, what it measured, and whether it held

The tests (tests/runbooks/test_validation.py, tests/aws/test_pacing.py, tests/services/test_notifications.py) assert which
path answered: RE2 rather than the fallback's timeout, no sleep before a pacing refusal, no broker
attempt while the broker is known to be down. This script measures how long those paths take on this
machine. It asserts nothing; the exit status is 0 whatever it measured. Results go to
docs/benchmarks.md by hand.
"""
from __future__ import annotations

import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from automations.aws import pacing  # noqa: E402
from automations.errors import InvalidRequest  # noqa: E402
from automations.runbooks import validation  # noqa: E402

RUNS = 7


def timed(call) -> float:
    """The median of RUNS runs, in seconds (one warm-up first: compile caches)."""
    call()
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def refused(call) -> None:
    try:
        call()
    except (InvalidRequest, pacing.PacingTimeout):
        return
    raise AssertionError("expected a refusal")


def claims():
    nested = {"type": "String", "required": True, "allowedPattern": "^(a+)+$"}
    lookahead = {"type": "String", "required": True, "allowedPattern": r"^(?=a)(a|aa)+$"}
    budget_schema = {f"P{i}": {"type": "StringList", "required": True, "allowedPattern": r"^(?=a)(a|aa)+$"}
                     for i in range(4)}
    budget_raw = {name: ["a" * 60 + "b"] * 10 for name in budget_schema}

    yield ("RE2 refuses ^(a+)+$ on 40 a's and '!'", "< 50 ms", 0.05, "below",
           timed(lambda: validation.validate_value("P", nested, "a" * 40 + "!")))
    yield ("Python's re on 22 a's and '!' (why RE2)", "> 50 ms", 0.05, "above",
           timed(lambda: re.fullmatch("^(a+)+$", "a" * 22 + "!")))
    yield ("fallback engine stops an exponential match", f"≈ {validation.FALLBACK_MATCH_SECONDS * 1000:.0f} ms,"
           " < 500 ms", 0.5, "below", timed(lambda: validation.validate_value("P", lookahead, "a" * 60 + "b")))
    yield ("40 slow matches in one request share one budget",
           f"< {validation.FALLBACK_BUDGET_SECONDS + 0.5:g} s", validation.FALLBACK_BUDGET_SECONDS + 0.5, "below",
           timed(lambda: refused(lambda: validation.validate_parameters(budget_schema, budget_raw))))
    yield ("a 1,000,000-character value is refused", "< 50 ms", 0.05, "below",
           timed(lambda: validation.validate_value("P", nested, "a" * 1_000_000)))

    settings.REDIS_URL = ""
    settings.DELEGATE_AWS_RATE_LIMITS = {**settings.DELEGATE_AWS_RATE_LIMITS, "start": 1.0}

    def too_far():
        pacing.reset()
        pacing.acquire("start", account_id="1", region="eu-west-1")
        refused(lambda: pacing.acquire("start", account_id="1", region="eu-west-1", timeout=0.2))
    yield ("pacing refuses a slot beyond its wait at once", "< 100 ms", 0.1, "below", timed(too_far))

    settings.DELEGATE_AWS_RATE_LIMITS = {**settings.DELEGATE_AWS_RATE_LIMITS, "start": 20.0}
    pacing.reset()
    stamps = []
    for _ in range(11):
        pacing.acquire("start", account_id="1", region="eu-west-1")
        stamps.append(time.monotonic())
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:], strict=False)]
    interval = 1 / 20 + pacing.GUARD_SECONDS
    yield ("pacing at 20/s: smallest gap between calls", f"≥ {interval * 1000:.0f} ms", interval, "above", min(gaps))


def main() -> int:
    print(f"{'claim':<52} {'aim':<18} {'measured':>10}  held")
    for what, aim, bound, direction, seconds in claims():
        held = seconds < bound if direction == "below" else seconds >= bound
        print(f"{what:<52} {aim:<18} {seconds * 1000:>8.1f} ms  {'yes' if held else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
