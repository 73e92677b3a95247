import django.contrib.postgres.fields
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # The indexes are built and dropped without blocking the events being written meanwhile.
    atomic = False

    dependencies = [
        ('accounts', '0003_program_redemption_limit_per_minute'),
        ('rules', '0004_inbox_finds_events_by_member'),
    ]

    operations = [
        migrations.CreateModel(
            name='EventBatch',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event_ids', django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), size=None)),
                ('created_at', models.DateTimeField()),
            ],
            options={
                'indexes': [models.Index(fields=['created_at'], name='eventbatch_created')],
            },
        ),
        # Events waiting when this runs are found by the sweeper through a batch of their own
        # (read while event_waiting still exists).
        migrations.RunSQL(
            "INSERT INTO rules_eventbatch (event_ids, created_at) "
            "SELECT array_agg(id ORDER BY id), min(received_at) FROM rules_inboundevent "
            "WHERE status = 'received' HAVING count(*) > 0",
            migrations.RunSQL.noop,
        ),
        AddIndexConcurrently(
            model_name='inboundevent',
            index=models.Index(fields=['program', '-received_at'], name='event_recent'),
        ),
        AddIndexConcurrently(
            model_name='inboundevent',
            index=models.Index(condition=models.Q(('error__isnull', False)), fields=['program', '-received_at'],
                               name='event_problem'),
        ),
        RemoveIndexConcurrently(
            model_name='inboundevent',
            name='event_waiting',
        ),
        RemoveIndexConcurrently(
            model_name='inboundevent',
            name='event_inbox',
        ),
        # 70 % of each new page left free for the processed version of its rows: marking an
        # event processed then fits on its page, a HOT update (bench/INGEST.md).
        migrations.RunSQL(
            "ALTER TABLE rules_inboundevent SET (fillfactor = 30)",
            "ALTER TABLE rules_inboundevent RESET (fillfactor)",
        ),
    ]
