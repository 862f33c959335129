"""Audit: the one hash-chained writer (chain), signing keys, signed digests, archive manifests and archives, the external stream, guards, database roles, search and the denied-access middleware."""
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
)

__all__ = [
    "GENESIS_HASH", "CHAINED_FIELDS", "ClientInfo", "clean_text", "compute_hash", "chained_fields",
    "record", "ChainProblem", "ChainReport", "chain_rows", "check_chain", "verify_chain",
]
