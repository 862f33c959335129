"""NextToken pagination shared by every List/Describe operation.

Tokens are opaque to clients; ours encode the offset into a stable (sorted) result list,
plus the operation name so a token from one call is refused by another.
"""

from __future__ import annotations

import base64
import json

from .errors import AwsError


def page(
    items: list,
    *,
    operation: str,
    max_results,
    next_token,
    default: int = 50,
    limit: int = 50,
    minimum: int = 1,
    error_code: str = "ValidationException",
):
    """Return (items_on_this_page, next_token_or_None)."""
    size = default if max_results is None else max_results
    if not isinstance(size, int) or isinstance(size, bool) or not minimum <= size <= limit:
        raise AwsError(
            error_code,
            f"1 validation error detected: Value '{max_results}' at 'maxResults' "
            f"failed to satisfy constraint: Member must have value between "
            f"{minimum} and {limit}",
        )
    offset = 0
    if next_token:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(next_token.encode()).decode())
            assert decoded["op"] == operation
            offset = int(decoded["offset"])
        except Exception:  # noqa: BLE001 - any malformed token is the same client error
            raise AwsError("InvalidNextToken", "The specified token is not valid.") from None
    chunk = items[offset : offset + size]
    following = offset + size
    token = None
    if following < len(items):
        token = base64.urlsafe_b64encode(json.dumps({"op": operation, "offset": following}).encode()).decode()
    return chunk, token
