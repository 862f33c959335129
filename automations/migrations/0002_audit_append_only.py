from django.db import migrations


def install(apps, schema_editor):
    from automations.audit import guards as audit_guards

    audit_guards.install(schema_editor.connection)


def remove(apps, schema_editor):
    from automations.audit import guards as audit_guards

    audit_guards.remove(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("automations", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
