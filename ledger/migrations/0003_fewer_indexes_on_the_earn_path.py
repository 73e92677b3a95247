"""Indexes the earn path paid for and nothing read: an operation's member and program (covered by
operation_member_created and operation_key_unique_per_program), a lot's program (a handful of
values), an entry's lot (nothing looks entries up by lot)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0003_program_redemption_limit_per_minute'),
        ('ledger', '0002_references_checked_by_the_audit'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="entry",
                    name="lot",
                    field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True,
                                            on_delete=django.db.models.deletion.DO_NOTHING,
                                            related_name="entries", to="ledger.lot"),
                ),
            ],
            database_operations=[migrations.RunSQL(
                "DROP INDEX ledger_entry_lot",
                reverse_sql="CREATE INDEX ledger_entry_lot ON ledger_entry (lot_id) WHERE lot_id IS NOT NULL",
            )],
        ),
        migrations.AlterField(
            model_name='lot',
            name='program',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='accounts.program'),
        ),
        migrations.AlterField(
            model_name='operation',
            name='member',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='operations', to='accounts.member'),
        ),
        migrations.AlterField(
            model_name='operation',
            name='program',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='accounts.program'),
        ),
    ]
