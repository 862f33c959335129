"""Audit: the one hash-chained writer (chain), digests, archive, guards, search and the denied-access middleware."""
from automations.audit.chain import (
    GENESIS_HASH,
    CHAINED_FIELDS,
    ClientInfo,
    clean_text,
    compute_hash,
    chained_fields,
    record,
    ChainProblem,
    ChainReport,
    chain_rows,
    check_chain,
    verify_chain,
    archived_anchor,
)

__all__ = [
    "GENESIS_HASH", "CHAINED_FIELDS", "ClientInfo", "clean_text", "compute_hash", "chained_fields",
    "record", "ChainProblem", "ChainReport", "chain_rows", "check_chain", "verify_chain",
    "archived_anchor"
]
