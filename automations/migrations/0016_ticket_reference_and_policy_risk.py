# Ticket references on requests and the policy risk that allows bulk approval (issue 15).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('automations', '0015_multi_account_locations'),
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
        migrations.AlterField(
            model_name='teamrunbook',
            name='ticket_pattern',
            field=models.CharField(blank=True, help_text='Optional regular expression: requests must then give a ticket reference that matches it as a whole, e.g. ^CHG[0-9]{7}$ . Checked with a linear-time engine (RE2).', max_length=200, verbose_name='Ticket reference pattern'),
        ),
    ]
