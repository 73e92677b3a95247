import pytest
from rest_framework.test import APIClient


@pytest.fixture
def partner_key(program):
    from accounts.services import partner_create

    _partner, key = partner_create(program=program, name="POS")
    return key


@pytest.fixture
def api(partner_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {partner_key}")
    return client


@pytest.fixture
def spend_rule(program):
    from rules.models import Rule
    from rules.services import rule_save

    return rule_save(rule=Rule(program=program, name="1 point per unit", kind="spend", event_type="purchase"))
