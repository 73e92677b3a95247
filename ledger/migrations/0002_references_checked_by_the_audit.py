"""Operations, lots and entries refer to members and programs (and entries to their lot and
operation) without database foreign keys, which locked the member's and the program's rows on
every insert; ``ledger_audit`` checks every reference (see ``ledger.models.Operation``). A lot's
operation, holds, allocations and balances keep their foreign keys."""

import django.db.models.deletion
from django.db import migrations, models

ENTRY_REFERENCES = [
    ("program_id", "accounts_program"),
    ("member_id", "accounts_member"),
    ("lot_id", "ledger_lot"),
    ("operation_id", "ledger_operation"),
]
DROP_ENTRY_FKS = "ALTER TABLE ledger_entry " + ", ".join(
    f"DROP CONSTRAINT ledger_entry_{column}_fkey" for column, _table in ENTRY_REFERENCES
)
ADD_ENTRY_FKS = "ALTER TABLE ledger_entry " + ", ".join(
    f"ADD CONSTRAINT ledger_entry_{column}_fkey FOREIGN KEY ({column}) REFERENCES {table} (id) "
    "DEFERRABLE INITIALLY DEFERRED"
    for column, table in ENTRY_REFERENCES
)


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0003_program_redemption_limit_per_minute"),
        ("ledger", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="entry",
                    name="lot",
                    field=models.ForeignKey(blank=True, db_constraint=False, null=True,
                                            on_delete=django.db.models.deletion.DO_NOTHING,
                                            related_name="entries", to="ledger.lot"),
                ),
                migrations.AlterField(
                    model_name="entry",
                    name="member",
                    field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING,
                                            related_name="entries", to="accounts.member"),
                ),
                migrations.AlterField(
                    model_name="entry",
                    name="operation",
                    field=models.ForeignKey(blank=True, db_constraint=False, null=True,
                                            on_delete=django.db.models.deletion.DO_NOTHING,
                                            related_name="entries", to="ledger.operation"),
                ),
                migrations.AlterField(
                    model_name="entry",
                    name="program",
                    field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING,
                                            related_name="+", to="accounts.program"),
                ),
            ],
            database_operations=[migrations.RunSQL(DROP_ENTRY_FKS, reverse_sql=ADD_ENTRY_FKS)],
        ),
        migrations.AlterField(
            model_name="operation",
            name="member",
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="operations", to="accounts.member"),
        ),
        migrations.AlterField(
            model_name="operation",
            name="program",
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="+", to="accounts.program"),
        ),
        migrations.AlterField(
            model_name="lot",
            name="member",
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="lots", to="accounts.member"),
        ),
        migrations.AlterField(
            model_name="lot",
            name="program",
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="+", to="accounts.program"),
        ),
    ]
