"""Indexes for the request lists that grow with the data (issue 19, docs/benchmarks.md).

My requests pages by (created_at, id) newest first: without an index that starts with the
requester, PostgreSQL reads every request of the requester and sorts them for each page (a
requester with 10,000 requests paid for all of them). The approver's "recent runs of this runbook
on these targets" reads this team's runs of the runbook newest first.

Built CONCURRENTLY on PostgreSQL (atomic = False) so a large request table keeps taking writes
while they build; the model state is the same on every database (SeparateDatabaseAndState).
"""
from django.db import migrations, models

INDEXES = {
    "request_requester_recent": "(requester_id, created_at DESC, id DESC)",
    "request_team_runbook_recent": "(team_id, runbook_id, created_at DESC)",
}


def create(apps, schema_editor):
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    for name, columns in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX{concurrently} IF NOT EXISTS {name} ON automations_automationrequest {columns}")


def drop(apps, schema_editor):
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX{concurrently} IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("automations", "0017_multi_target_approvals"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[
                migrations.AddIndex(
                    model_name="automationrequest",
                    index=models.Index(fields=["requester", "-created_at", "-id"], name="request_requester_recent"),
                ),
                migrations.AddIndex(
                    model_name="automationrequest",
                    index=models.Index(fields=["team", "runbook", "-created_at"], name="request_team_runbook_recent"),
                ),
            ],
        ),
    ]
