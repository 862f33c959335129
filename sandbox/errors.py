"""The one exception every sandbox operation raises to answer with an AWS error.

The HTTP layer renders it in the caller's protocol: a JSON `__type` body for SSM, an
`<ErrorResponse>` for STS, a `<Response><Errors>` document for EC2 (aws-api.md §1).
"""

from __future__ import annotations


class AwsError(Exception):
    def __init__(self, code: str, message: str = "", status: int = 400, sender: bool = True):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        # STS puts Sender/Receiver in <Type>; a 5xx is the receiver's fault.
        self.sender = sender and status < 500


def validation(message: str) -> AwsError:
    """SSM's generic pattern/length failure (botocore checks only `min`, aws-api.md §1.4)."""
    return AwsError("ValidationException", message)
