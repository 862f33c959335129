"""Tests written to kill surviving mutants of the policy, transitions, dispatch and audit chain modules."""
