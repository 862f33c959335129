"""The AutomationExecutionStatus values, and which of them are final (aws-api.md §7).

Its own module because both the state (which executions the engine still drives after a
restart) and the execution records need it, and the records already build on the state.
"""

from __future__ import annotations

STATUSES = (
    "Pending",
    "InProgress",
    "Waiting",
    "Success",
    "TimedOut",
    "Cancelling",
    "Cancelled",
    "Failed",
    "PendingApproval",
    "Approved",
    "Rejected",
    "Scheduled",
    "RunbookInProgress",
    "PendingChangeCalendarOverride",
    "ChangeCalendarOverrideApproved",
    "ChangeCalendarOverrideRejected",
    "CompletedWithSuccess",
    "CompletedWithFailure",
    "Exited",
)
TERMINAL = frozenset(
    {
        "Success",
        "TimedOut",
        "Cancelled",
        "Failed",
        "Rejected",
        "ChangeCalendarOverrideRejected",
        "CompletedWithSuccess",
        "CompletedWithFailure",
        "Exited",
    }
)


def is_terminal(status: str) -> bool:
    return status in TERMINAL
