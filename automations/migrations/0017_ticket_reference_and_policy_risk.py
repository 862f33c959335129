# Ticket references on requests (issue 15) and the policy risk that allows bulk approval.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('automations', '0013_audit_partial_text_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='automationrequest',
            name='ticket_reference',
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AddField(
            model_name='teamrunbook',
            name='risk',
            field=models.CharField(choices=[('standard', 'Standard: each request approved on its own'), ('low', 'Low: identical requests may be approved together')], default='standard', help_text='Low: the approval queue offers bulk approval of identical requests (same runbook, version, parameters, account and region; only the targets differ).', max_length=8),
        ),
    ]
