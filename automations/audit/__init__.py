"""Audit: the one hash-chained writer, and everything that keeps its record honest and searchable.

chain (the writer and the chain check), signing (keys), digests, manifests and archive, stream
(the external copy), guards (triggers), roles (database grants), search, and middleware (denied access).
"""
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
