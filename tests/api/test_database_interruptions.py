"""The database failing a request for reasons of its own (here: its connection ended by the server,
as a restart or a failover ends it) is answered in the error envelope with code ``try_again`` and
``Retry-After``, changes nothing, and the next request is served on a new connection."""

from __future__ import annotations

import psycopg
import pytest
from django.db import close_old_connections, connection

from campaigns.models import Redemption
from ledger.models import Balance
from tests.api.fixtures import client_for, earn

pytestmark = pytest.mark.django_db(transaction=True)


def end_connection() -> None:
    """The server ends this thread's connection (``pg_terminate_backend``), as a restart would."""
    pid = connection.connection.info.backend_pid
    params = {k: v for k, v in connection.get_connection_params().items()
              if k not in ("cursor_factory", "context", "prepare_threshold")}
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.fixture
def api(make_program, make_member):
    program = make_program()
    earn(make_member(program, external_id="c-1"), 500)
    client = client_for(program)
    client.raise_request_exception = False  # answered as production answers it
    yield client
    close_old_connections()  # a test that failed half-way leaves the test database usable


def assert_try_again(response) -> None:
    assert response.status_code == 500
    assert response["Retry-After"] == "1"
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("api_error", "try_again", None)
    assert "Send it again" in error["message"]


@pytest.mark.parametrize("request_", [
    lambda api: api.get("/api/v1/members/c-1/balance"),  # answered around DRF
    lambda api: api.get("/api/v1/members/c-1"),
    lambda api: api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 100}, format="json",
                         HTTP_IDEMPOTENCY_KEY="k-1"),
], ids=["balance", "member", "redemption"])
def test_a_request_whose_connection_the_server_ended_is_answered_try_again(api, request_):
    assert api.get("/api/v1/members/c-1/balance").status_code == 200  # the connection is made and in use
    end_connection()
    assert_try_again(request_(api))
    # What the end of every request runs (Django's test client leaves it out): the broken connection
    # is dropped, and the next request makes a new one.
    close_old_connections()
    assert connection.connection is None
    assert Balance.objects.get(member__external_id="c-1").available == 500
    assert not Redemption.objects.exists()
    again = request_(api)
    assert again.status_code in (200, 201), again.json()


def test_other_server_errors_keep_their_code(api, monkeypatch):
    from ledger import api as ledger_api

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ledger_api, "balance_by_external_id", broken)
    response = api.get("/api/v1/members/c-1/balance")
    assert response.status_code == 500 and "Retry-After" not in response
    assert response.json()["error"]["code"] == "internal_error"
