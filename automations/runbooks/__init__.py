"""Runbooks: the document model (documents), parameter validation, markdown rendering."""
from automations.runbooks.documents import (
    PLAIN_TYPES,
    KEPT_KEYS,
    AUTOMATION_ROLE_PARAMETER,
    MAX_CONTENT_CHARS,
    MAX_PATTERN_CHARS,
    MAX_PARAMETERS,
    UnsupportedRunbook,
    load_document,
    element_type,
    is_list_type,
    RoleKind,
    identity_of,
    is_role_like,
    role_kind_of,
    step_details,
    content_diff,
    parse_parameters,
    ordered_parameters,
    pattern_problems,
    step_summary,
    category_of,
    content_hash,
    fingerprint_of,
    fingerprint_for,
)

__all__ = [
    "PLAIN_TYPES", "KEPT_KEYS", "AUTOMATION_ROLE_PARAMETER", "MAX_CONTENT_CHARS", "MAX_PATTERN_CHARS",
    "MAX_PARAMETERS", "UnsupportedRunbook", "load_document", "element_type", "is_list_type",
    "RoleKind", "identity_of", "is_role_like", "role_kind_of", "step_details", "content_diff", "parse_parameters", "ordered_parameters", "pattern_problems", "step_summary",
    "category_of", "content_hash", "fingerprint_of", "fingerprint_for"
]
