import pytest
from rest_framework.test import APIClient
from rest_framework.views import APIView


def _client(program, name):
    from accounts.services import partner_create

    _partner, key = partner_create(program=program, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def api(program):
    return _client(program, "POS")


@pytest.fixture
def other_api(make_program):
    return _client(make_program(), "Other")


@pytest.fixture
def through_drf(monkeypatch):
    """The requests DRF's ``APIView.dispatch`` answered, by path."""
    seen: list[str] = []
    dispatch = APIView.dispatch

    def recording(self, request, *args, **kwargs):
        seen.append(request.path)
        return dispatch(self, request, *args, **kwargs)

    monkeypatch.setattr(APIView, "dispatch", recording)
    return seen
