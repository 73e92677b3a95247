"""A delivery's event and endpoint lose their own indexes: the unique (event, endpoint) index and
the (endpoint, -id) index start with them. Only the indexes are dropped (concurrently); the foreign
key constraints stay as they are, without being validated again."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("webhooks", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="webhookdelivery",
                    name="endpoint",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="deliveries", to="webhooks.webhookendpoint"),
                ),
                migrations.AlterField(
                    model_name="webhookdelivery",
                    name="event",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="deliveries", to="webhooks.webhookevent"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX CONCURRENTLY IF EXISTS webhooks_webhookdelivery_endpoint_id_d5bfb5c8",
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS webhooks_webhookdelivery_endpoint_id_d5bfb5c8 "
                    "ON webhooks_webhookdelivery (endpoint_id)",
                ),
                migrations.RunSQL(
                    "DROP INDEX CONCURRENTLY IF EXISTS webhooks_webhookdelivery_event_id_48da21e7",
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS webhooks_webhookdelivery_event_id_48da21e7 "
                    "ON webhooks_webhookdelivery (event_id)",
                ),
            ],
        ),
    ]
