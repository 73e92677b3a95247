"""The rule's own index on rule usage goes: the unique (rule, member, period) index starts with it.
Dropped concurrently, so that a deploy does not lock the table the ingest path writes to."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("rules", "0005_inbound_event_updated_in_place"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="ruleusage",
                    name="rule",
                    field=models.ForeignKey(db_constraint=False, db_index=False,
                                            on_delete=django.db.models.deletion.CASCADE, related_name="usage",
                                            to="rules.rule"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX CONCURRENTLY IF EXISTS rules_ruleusage_rule_id_351eb6ac",
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS rules_ruleusage_rule_id_351eb6ac "
                    "ON rules_ruleusage (rule_id)",
                ),
            ],
        ),
    ]
