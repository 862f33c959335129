"""Stateful property tests: Hypothesis state machines driving the public services against the sandbox."""
