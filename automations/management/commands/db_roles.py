"""manage.py db_roles: the SQL for the owner and application database roles, or apply the grants now."""
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from automations.audit import roles as db_roles


class Command(BaseCommand):
    help = ("PostgreSQL roles for production (docs/operations.md): --sql prints the bootstrap SQL a superuser"
            " runs once (an owner role for migrations, an application role for runtime); --grant applies the"
            " application role's table privileges now (migrate does it too when DELEGATE_DB_APP_ROLE is set);"
            " --check reports what the application role may do that it must not.")

    def add_arguments(self, parser):
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--sql", action="store_true", help="Print SQL (bootstrap, or with --grants-only the grants).")
        action.add_argument("--grant", action="store_true", help="Grant the application role its privileges now.")
        action.add_argument("--check", action="store_true", help="Exit 1 if the application role is not restricted.")
        parser.add_argument("--owner", default="delegate_owner", help="Owner role (default delegate_owner).")
        parser.add_argument("--app", default="delegate_app", help="Application role (default delegate_app).")
        parser.add_argument("--database", default=None, help="Database name (default: the configured one).")
        parser.add_argument("--grants-only", action="store_true", help="With --sql: only the post-migrate grants.")

    def handle(self, *args, sql=False, grant=False, check=False, owner, app, database, grants_only=False, **options):
        try:
            if sql:
                if grants_only:
                    self.stdout.write(";\n".join(db_roles.grants_sql(app=app)) + ";")
                else:
                    database = database or (connection.settings_dict["NAME"] if connection.vendor == "postgresql"
                                            else "delegate")
                    self.stdout.write(db_roles.bootstrap_sql(owner=owner, app=app, database=database))
                return
            if connection.vendor != "postgresql":
                raise CommandError("Database roles are a PostgreSQL feature; SQLite (the demo) has none.")
            if grant:
                db_roles.grant(connection, app)
                self.stdout.write(self.style.SUCCESS(f"{app}: runtime privileges granted; INSERT and SELECT only on"
                                                     " the audit tables; owns nothing."))
                return
            found = db_roles.problems(connection, app)
            if found:
                raise CommandError("; ".join(found))
            self.stdout.write(self.style.SUCCESS(f"{app} is restricted as it should be."))
        except db_roles.RoleProblem as error:
            raise CommandError(str(error)) from error
