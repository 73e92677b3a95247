import django.db.models.deletion
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # The new index is built without blocking the events being written meanwhile.
    atomic = False

    dependencies = [
        ('accounts', '0003_program_redemption_limit_per_minute'),
        ('rules', '0003_inbound_event_and_usage_without_foreign_keys'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='inboundevent',
            index=models.Index(fields=['program', 'member_external_id'], name='event_member'),
        ),
        migrations.AlterField(
            model_name='inboundevent',
            name='member',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='accounts.member'),
        ),
    ]
