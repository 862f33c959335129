"""Trigram indexes for the audit search's partial, any-case filters (actor, runbook).

The audit page's actor and runbook filters are `icontains`: on PostgreSQL `UPPER(col) LIKE
UPPER('%text%')`, which no btree can answer. Without these the planner walks the sequence index
backwards and filters every row: 0.4–0.6 s at 1,000,000 events for an actor with a few hundred
events (docs/benchmarks.md, bench/pages.py). A GIN trigram index on the same expression answers
it directly. Built CONCURRENTLY (atomic = False) so a large audit table keeps taking writes while
it builds. PostgreSQL only; SQLite (the demo) scans, as before.
"""
from django.db import migrations

INDEXES = {
    "audit_actor_name_trgm": "UPPER(actor_name::text) gin_trgm_ops",
    "audit_runbook_trgm": "UPPER(runbook::text) gin_trgm_ops",
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, expression in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON automations_auditevent USING gin ({expression})")
    # Statistics of the indexed expressions: without them the planner guesses 100 matches for any
    # text and takes the trigram index even for a runbook in 10,000 events (94 ms, not 10 ms).
    schema_editor.execute("ANALYZE automations_auditevent")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("automations", "0012_justification_on_and_owner_words"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
