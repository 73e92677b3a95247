"""A marketer in the admin, in a real browser: writes a rule (bad CEL refused on its field), tries
an event against it without posting anything, and reprocesses a rejected event from the inbox."""

from __future__ import annotations

import json

import pytest

from accounts.models import Member, Program
from ledger.models import Entry, Operation
from rules.models import InboundEvent, Rule, RuleUsage
from rules.pipeline import event_submit
from tests.browser.conftest import submit

pytestmark = pytest.mark.django_db(transaction=True)


def purchase(event_id: str, member_id: str, amount: str) -> dict:
    return {"event_id": event_id, "type": "purchase", "member_id": member_id,
            "properties": {"order_id": f"o-{event_id}", "amount": amount, "currency": "USD"}}


def posted() -> tuple[int, ...]:
    return (Operation.objects.count(), Entry.objects.count(), InboundEvent.objects.count(), RuleUsage.objects.count())


def test_bad_cel_is_refused_on_its_field_then_the_rule_is_saved_and_tried(admin_page, program, make_member):
    page = admin_page
    make_member(program, external_id="gold-member", attributes={"vip": True})
    page.goto("/admin/rules/rule/add/")
    page.fill("#id_name", "VIP double points")
    page.select_option("#id_program", str(program.pk))
    page.select_option("#id_kind", "spend")
    page.fill("#id_event_type", "purchase")
    page.fill("#id_points_per_unit", "2")
    page.fill("#id_condition", "member.attributes.vip ==")
    submit(page, "input[name=_save]")

    error = page.locator("#id_condition_error")  # the compiler's message, on the condition field
    assert error.is_visible()
    assert "Syntax error: mismatched input '<EOF>'" in error.inner_text()
    assert not Rule.objects.exists()
    assert Program.objects.get(pk=program.pk).rules_version == 0

    page.fill("#id_condition", "member.attributes.vip == true")
    submit(page, "input[name=_continue]")
    assert page.locator(".messagelist .success").is_visible(), page.locator("body").inner_text()[:1500]
    rule = Rule.objects.get()
    assert (rule.condition, rule.points_per_unit) == ("member.attributes.vip == true", 2)

    # The rule's page carries its own "Try it" form: the sample event, for a chosen member.
    before = posted()
    page.fill("#try_member", "gold-member")
    page.fill("#try_event", json.dumps(purchase("try-1", "someone", "42.50")))
    submit(page, "#try-form input[type=submit]")
    result = page.locator("#try-result")
    assert result.is_visible()
    text = result.inner_text()
    assert "VIP double points" in text and "85" in text and "(this rule)" in text, text
    assert posted() == before  # nothing was posted: no points, no event, no cap usage


def test_try_it_shows_why_a_rule_did_not_fire(admin_page, program, make_member):
    from rules.services import rule_save

    make_member(program, external_id="plain-member", attributes={"vip": False})
    rule_save(rule=Rule(program=program, name="VIP only", kind="spend", event_type="purchase",
                        condition="member.attributes.vip == true"))
    page = admin_page
    page.goto("/admin/rules/rule/")
    submit(page, "text=Try an event")
    page.select_option("#id_program", str(program.pk))
    page.fill("#id_member", "plain-member")
    page.fill("#id_event", json.dumps(purchase("try-2", "x", "10")))
    submit(page, "input[value='Try it']")
    text = page.locator("#try-result").inner_text()
    assert "No points." in text and "VIP only\tCondition not met\t0" in text, text

    page.fill("#id_event", "{not json")
    submit(page, "input[value='Try it']")
    assert "This is not valid JSON" in page.locator(".errorlist").inner_text()


def test_inbox_filters_shows_and_reprocesses_a_rejected_event(admin_page, program, make_member):
    from rules.services import rule_save

    rule_save(rule=Rule(program=program, name="1 point per unit", kind="spend", event_type="purchase"))
    make_member(program, external_id="regular")
    done = event_submit(program=program, partner=None, payload=purchase("e-ok", "regular", "5")).event
    late = event_submit(program=program, partner=None, payload=purchase("e-late", "late-joiner", "42.50")).event
    assert (done.status, late.status) == ("processed", "rejected")

    page = admin_page
    page.goto("/admin/rules/inboundevent/")
    submit(page, "#changelist-filter >> text=Rejected")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1 and "e-late" in rows.first.inner_text()

    with page.expect_navigation():
        rows.first.locator("th a, td a").first.click()
    detail = page.locator("#content").inner_text()
    assert "member_not_found" in detail and '"order_id": "o-e-late"' in detail

    make_member(program, external_id="late-joiner")
    page.go_back()
    page.locator("#result_list tbody tr").first.locator("input.action-select").check()
    page.select_option("select[name=action]", "reprocess")
    submit(page, "button[name=index], .actions button")
    assert "1 event(s) processed." in page.locator(".messagelist").inner_text()
    late.refresh_from_db()
    assert (late.status, late.points) == ("processed", 42)
    assert Member.objects.get(external_id="late-joiner").balance.available == 42
