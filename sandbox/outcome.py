"""The contract between the engine and step actions: what a step sees and what it answers."""

from __future__ import annotations

from dataclasses import dataclass, field

POLL_SECONDS = 0.5  # how often (before time_scale) waiting steps look again, like Automation's pollers


class StepFailure(Exception):
    """The step failed; the message becomes its FailureMessage and onFailure decides what's next."""


@dataclass
class Outcome:
    kind: str  # "done", "poll" (call again at `wake`) or "wait" (Waiting for a signal)
    outputs: dict = field(default_factory=dict)
    response: dict | None = None  # what the step's `outputs[].Selector` expressions are applied to
    message: str = ""
    next_step: str | None = None  # aws:branch's choice
    wake: float | None = None


def done(outputs=None, response=None, message="", next_step=None) -> Outcome:
    return Outcome("done", outputs or {}, response, message, next_step)


def poll(wake: float | None = None) -> Outcome:
    return Outcome("poll", wake=wake)


def wait() -> Outcome:
    return Outcome("wait")


@dataclass
class StepContext:
    region: object  # state.RegionState
    execution: dict
    step: dict  # the StepExecution record
    inputs: dict  # the step's inputs with every {{ placeholder }} resolved
    scratch: dict  # the action's own progress, kept on the step between ticks and restarts
    now: float
    faults: object

    def later(self, seconds: float = POLL_SECONDS) -> Outcome:
        return poll(self.now + self.region.scaled(seconds))
