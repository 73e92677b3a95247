"""Idempotency keys are kept per partner, not per program: two partners of one program may use the
same key, and neither sees the other's response.

Records already made are given their partner where the program has only one; the others keep no
partner and are never matched again (a retry with such a key after the upgrade runs as new)."""

import django.db.models.deletion
from django.db import migrations, models

BACKFILL = """
UPDATE loyalty_idempotencyrecord r SET partner_id = sole.partner_id
FROM (SELECT program_id, min(id) AS partner_id FROM accounts_partner GROUP BY program_id HAVING count(*) = 1) sole
WHERE r.program_id = sole.program_id AND r.partner_id IS NULL
"""


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0003_program_redemption_limit_per_minute'),
        ('loyalty', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='idempotencyrecord',
            name='partner',
            field=models.ForeignKey(db_constraint=False, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.CASCADE, related_name='+',
                                    to='accounts.partner'),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name='idempotencyrecord',
            constraint=models.UniqueConstraint(fields=('partner', 'key'), name='idempotency_key_unique_per_partner'),
        ),
        migrations.RemoveConstraint(
            model_name='idempotencyrecord',
            name='idempotency_key_unique_per_program',
        ),
    ]
