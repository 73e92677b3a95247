"""``loyalty.db.pg_int_array``: a list of integers as one array-literal parameter."""

import pytest
from django.db import connection

from loyalty.db import pg_int_array, prepared_cursor


@pytest.mark.django_db
@pytest.mark.parametrize("values", [[], [0], [1, -2, 3], [2**63 - 1, -(2**63)]])
def test_postgresql_reads_back_the_same_integers(values):
    for cursor_of in (connection.cursor, prepared_cursor):
        with cursor_of() as cursor:
            cursor.execute("SELECT %s::bigint[]", [pg_int_array(values)])
            assert cursor.fetchone()[0] == values
