"""Rule usage is read by member (the events' members, and each of their capped rules): the unique
index now starts with the member, and the rule gets its index back for deleting a rule's usage.
Built concurrently, so that a deploy does not lock the table the ingest path writes to."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("rules", "0008_inbound_event_trace_stored_compact"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="ruleusage", name="rule_usage_unique"),
                migrations.AddConstraint(
                    model_name="ruleusage",
                    constraint=models.UniqueConstraint(fields=["member", "rule", "period"],
                                                       name="rule_usage_unique_by_member"),
                ),
                migrations.AlterField(
                    model_name="ruleusage",
                    name="rule",
                    field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="usage", to="rules.rule"),
                ),
                migrations.AlterField(
                    model_name="ruleusage",
                    name="member",
                    field=models.ForeignKey(db_constraint=False, db_index=False,
                                            on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                            to="accounts.member"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS rule_usage_unique_by_member "
                    "ON rules_ruleusage (member_id, rule_id, period)",
                    "DROP INDEX CONCURRENTLY IF EXISTS rule_usage_unique_by_member",
                ),
                migrations.RunSQL(
                    "ALTER TABLE rules_ruleusage ADD CONSTRAINT rule_usage_unique_by_member "
                    "UNIQUE USING INDEX rule_usage_unique_by_member",
                    "ALTER TABLE rules_ruleusage DROP CONSTRAINT rule_usage_unique_by_member",
                ),
                migrations.RunSQL(
                    "ALTER TABLE rules_ruleusage DROP CONSTRAINT IF EXISTS rule_usage_unique",
                    ["CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS rule_usage_unique "
                     "ON rules_ruleusage (rule_id, member_id, period)",
                     "ALTER TABLE rules_ruleusage ADD CONSTRAINT rule_usage_unique UNIQUE USING INDEX rule_usage_unique"],
                ),
                migrations.RunSQL(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS rules_ruleusage_rule_id_351eb6ac "
                    "ON rules_ruleusage (rule_id)",
                    "DROP INDEX CONCURRENTLY IF EXISTS rules_ruleusage_rule_id_351eb6ac",
                ),
                migrations.RunSQL(
                    "DROP INDEX CONCURRENTLY IF EXISTS rules_ruleusage_member_id_82f182ac",
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS rules_ruleusage_member_id_82f182ac "
                    "ON rules_ruleusage (member_id)",
                ),
            ],
        ),
    ]
