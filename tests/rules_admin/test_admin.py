import datetime as dt
import json

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from accounts.models import Member, Program
from ledger.models import Entry, Operation
from rules.models import EventType, InboundEvent, Rule, RuleUsage
from rules.pipeline import event_submit, events_submit_batch
from rules.services import rule_save

pytestmark = pytest.mark.django_db

EMPTY_RULE = {
    "name": "", "kind": "spend", "event_type": "purchase", "is_active": "on", "active_from_0": "",
    "active_from_1": "", "active_until_0": "", "active_until_1": "", "priority": "0", "stacking": "cumulative",
    "condition": "", "points_expression": "", "points_per_unit": "1", "rounding": "down", "min_amount": "",
    "skus": "", "categories": "", "points_per_item": "", "item_multiplier": "", "points": "", "multiplier": "",
    "max_points_per_event": "", "member_cap_period": "", "member_cap_points": "", "member_cap_times": "",
}


def rule_form(program=None, **fields) -> dict:
    data = {**EMPTY_RULE, **fields}
    if program is not None:
        data["program"] = program.pk
    return data


def purchase(event_id: str, member_id: str, amount: str = "42.50") -> dict:
    return {"event_id": event_id, "type": "purchase", "member_id": member_id,
            "properties": {"order_id": f"o-{event_id}", "amount": amount, "currency": "USD"}}


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def version(program) -> int:
    return Program.objects.get(pk=program.pk).rules_version


@pytest.fixture
def spend_rule(program):
    return rule_save(rule=Rule(program=program, name="1 point per unit", kind="spend", event_type="purchase"))


@pytest.fixture
def rejected_event(program):
    event = event_submit(program=program, partner=None, payload=purchase("e-late", "late-joiner")).event
    assert event.status == "rejected" and event.error["code"] == "member_not_found"
    return event


def nothing_posted() -> dict:
    return {"operations": Operation.objects.count(), "entries": Entry.objects.count(),
            "events": InboundEvent.objects.count(), "usage": RuleUsage.objects.count()}


# --- every page loads ----------------------------------------------------------------------


def test_changelists_and_detail_pages_load(admin_client, program, spend_rule, rejected_event):
    EventType.objects.create(program=program, name="review_written", schema={"type": "object"})
    for model in (Rule, EventType, InboundEvent):
        name = model._meta.model_name
        assert admin_client.get(reverse(f"admin:rules_{name}_changelist")).status_code == 200, name
        obj = model.objects.first()
        assert admin_client.get(reverse(f"admin:rules_{name}_change", args=[obj.pk])).status_code == 200, name
    assert admin_client.get(reverse("admin:rules_rule_add")).status_code == 200


def test_rule_changelist_filters_and_links_to_try_it(admin_client, program, spend_rule):
    url = reverse("admin:rules_rule_changelist")
    response = admin_client.get(url, {"kind": "spend", "is_active__exact": "1", "q": "point"})
    assert response.context["cl"].result_count == 1
    assert reverse("admin:rules_rule_try") in response.content.decode()


# --- saving rules goes through the services ------------------------------------------------


@pytest.mark.parametrize(("field", "source", "message"), [
    ("condition", "event.properties.amount >", ""),
    ("condition", "customer.tier == 'gold'", "Unknown variable(s) customer"),
    ("points_expression", "int(event.properties.amount) *", ""),
])
def test_bad_cel_is_shown_on_its_field_and_nothing_is_saved(admin_client, program, field, source, message):
    response = admin_client.post(reverse("admin:rules_rule_add"), rule_form(program, name="Bad", **{field: source}))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert escape(errors[field][0]) in response.content.decode()  # the compiler's own message
    assert not Rule.objects.exists()
    assert version(program) == 0


def test_kind_rules_come_from_the_service(admin_client, program):
    response = admin_client.post(reverse("admin:rules_rule_add"), rule_form(program, name="Event", kind="event"))
    assert response.context["adminform"].form.errors == {
        "points": ["An event rule needs its points (or a points expression)."]
    }
    assert not Rule.objects.exists()


def test_a_good_rule_is_saved_and_bumps_the_version(admin_client, program):
    response = admin_client.post(reverse("admin:rules_rule_add"), rule_form(
        program, name="Gold double", condition="member.tier == 'gold'", points_per_unit="2",
        kind="product", skus="LATTE, MOCHA",
    ))
    assert response.status_code == 302, response.context["adminform"].form.errors
    rule = Rule.objects.get()
    assert (rule.condition, rule.skus, rule.categories) == ("member.tier == 'gold'", ["LATTE", "MOCHA"], [])
    assert version(program) == 1

    response = admin_client.post(reverse("admin:rules_rule_change", args=[rule.pk]),
                                 rule_form(name="Gold triple", points_per_unit="3", kind="product", skus="LATTE"))
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.program, rule.skus) == ("Gold triple", program, ["LATTE"])
    assert version(program) == 2


def test_deleting_rules_bumps_the_version(admin_client, program, spend_rule):
    other = rule_save(rule=Rule(program=program, name="Signup bonus", kind="event", event_type="signup", points=50))
    third = rule_save(rule=Rule(program=program, name="Welcome", kind="event", event_type="signup", points=5))
    start = version(program)

    response = admin_client.post(reverse("admin:rules_rule_delete", args=[spend_rule.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert version(program) == start + 1

    response = admin_client.post(reverse("admin:rules_rule_changelist"), {
        "action": "delete_selected", "_selected_action": [other.pk, third.pk], "post": "yes",
    })
    assert response.status_code == 302
    assert not Rule.objects.exists()
    assert version(program) == start + 3


# --- event types ----------------------------------------------------------------------------


def test_event_type_with_a_bad_schema_shows_the_error_on_the_field(admin_client, program):
    url = reverse("admin:rules_eventtype_add")
    data = {"program": program.pk, "name": "review_written", "description": "",
            "schema": json.dumps({"type": "objekt"})}
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["schema"]
    assert "Not a valid JSON Schema" in response.context["adminform"].form.errors["schema"][0]
    assert not EventType.objects.exists()

    response = admin_client.post(url, {**data, "name": "purchase", "schema": ""})
    assert list(response.context["adminform"].form.errors) == ["name"]

    response = admin_client.post(url, {**data, "schema": ""})
    assert response.status_code == 302
    assert EventType.objects.get().schema == {}


# --- try it ---------------------------------------------------------------------------------


def test_try_it_shows_the_awards_and_the_trace_and_posts_nothing(admin_client, program, member, spend_rule):
    rule_save(rule=Rule(program=program, name="Signup bonus", kind="event", event_type="signup", points=50))
    before = nothing_posted()
    response = admin_client.post(reverse("admin:rules_rule_try"), {
        "program": program.pk, "member": member.external_id,
        "event": json.dumps(purchase("try-1", "someone-else", amount="42.50")),
    })
    assert response.status_code == 200
    assert response.context["form"].errors == {}
    page = response.content.decode()
    assert "1 point per unit" in page and "<strong>42</strong>" in page  # the award and its total
    assert "Fired" in page and "Other event type" in page and "applies to signup" in page  # the trace
    assert nothing_posted() == before


def test_try_it_on_a_rule_highlights_it(admin_client, program, member, spend_rule):
    url = reverse("admin:rules_rule_try_rule", args=[spend_rule.pk])
    assert url in admin_client.get(reverse("admin:rules_rule_change", args=[spend_rule.pk])).content.decode()
    response = admin_client.post(url, {"member": member.external_id,
                                       "event": json.dumps(purchase("try-1", "x", amount="10"))})
    assert response.status_code == 200
    assert "(this rule)" in response.content.decode()
    assert not InboundEvent.objects.exists()


def test_try_it_previews_a_new_member_when_the_program_enrolls_on_first_event(admin_client, make_program):
    program = make_program(enroll_on_first_event=True)
    rule = rule_save(rule=Rule(program=program, name="Gold only", kind="spend", condition="member.tier == 'gold'",
                               is_active=False))
    rule_save(rule=Rule(program=program, name="Everyone", kind="spend", points_per_unit=2))
    response = admin_client.post(reverse("admin:rules_rule_try_rule", args=[rule.pk]),
                                 {"member": "newcomer", "event": json.dumps(purchase("t", "x", amount="10"))})
    assert response.context["form"].errors == {}
    notes = " ".join(response.context["notes"])
    assert "'newcomer' is not a member yet" in notes and "'Gold only' is not active" in notes
    assert "<strong>20</strong>" in response.content.decode()
    assert not Member.objects.filter(external_id="newcomer").exists()


@pytest.mark.parametrize(("member_id", "event", "field", "message"), [
    ("m", "{not json", "event", "This is not valid JSON"),
    ("m", json.dumps(purchase("t", "m", amount="abc")), "event", "properties.amount"),
    ("nobody", json.dumps(purchase("t", "m")), "member", "No member 'nobody'"),
    # A lone surrogate: valid JSON, which the API refuses before any rule sees it (none can read it).
    ("m", json.dumps({**purchase("t", "m"), "note": "a\ud800"}), "event", "Lone surrogate characters are not allowed"),
])
def test_try_it_shows_what_is_wrong_with_the_event(admin_client, program, make_member, member_id, event, field,
                                                   message):
    make_member(program, external_id="m")
    response = admin_client.post(reverse("admin:rules_rule_try"),
                                 {"program": program.pk, "member": member_id, "event": event})
    assert response.status_code == 200
    assert message in response.context["form"].errors[field][0]
    assert response.context["result"] is None


# --- the inbox ------------------------------------------------------------------------------


def test_reprocess_turns_a_rejected_event_into_processed(admin_client, program, member, make_member, spend_rule,
                                                         rejected_event):
    done = event_submit(program=program, partner=None, payload=purchase("e-ok", member.external_id)).event
    assert done.status == "processed"
    make_member(program, external_id="late-joiner")
    response = admin_client.post(reverse("admin:rules_inboundevent_changelist"), {
        "action": "reprocess", "_selected_action": [rejected_event.pk, done.pk],
    }, follow=True)
    rejected_event.refresh_from_db()
    assert rejected_event.status == "processed" and rejected_event.points == 42 and rejected_event.error is None
    assert Operation.objects.filter(member__external_id="late-joiner").count() == 1
    messages = messages_of(response)
    assert "1 event(s) processed." in messages
    assert any("1 event(s) skipped" in message for message in messages)


def test_reprocess_reports_an_event_refused_again(admin_client, rejected_event):
    response = admin_client.post(reverse("admin:rules_inboundevent_changelist"), {
        "action": "reprocess", "_selected_action": [rejected_event.pk],
    }, follow=True)
    assert any("refused again" in message for message in messages_of(response))
    rejected_event.refresh_from_db()
    assert rejected_event.status == "rejected"


def test_reprocess_leaves_an_event_kept_without_its_id(admin_client, program, member, spend_rule):
    """A rejected copy kept without its id (its id went to a later copy) is never processed, even
    once it would pass: it would earn a second time for the same event."""
    from rules.pipeline import event_reprocess, events_process
    from rules.services import event_type_save

    visit = {"event_id": "twice", "type": "visit", "member_id": member.external_id, "properties": {}}
    result = events_submit_batch(program=program, partner=None, payloads=[
        visit, purchase("twice", member.external_id, amount="10.00")])
    events_process(result.received_ids)
    kept = InboundEvent.objects.get(program=program, event_id=None)
    assert kept.status == "rejected" and kept.error["code"] == "unknown_event_type"
    event_type_save(event_type=EventType(program=program, name="visit", schema={}))  # it would pass now
    rule_save(rule=Rule(program=program, name="Visit", kind="event", event_type="visit", points=5))
    assert event_reprocess(event=kept).status == "rejected"
    response = admin_client.post(reverse("admin:rules_inboundevent_changelist"), {
        "action": "reprocess", "_selected_action": [kept.pk],
    }, follow=True)
    assert any("kept without an event_id" in message for message in messages_of(response))
    kept.refresh_from_db()
    assert kept.status == "rejected" and kept.points == 0
    assert Operation.objects.filter(member=member).count() == 1


def test_inbox_is_read_only(admin_client, rejected_event):
    change = reverse("admin:rules_inboundevent_change", args=[rejected_event.pk])
    assert admin_client.get(reverse("admin:rules_inboundevent_add")).status_code == 403
    assert admin_client.post(reverse("admin:rules_inboundevent_delete", args=[rejected_event.pk]),
                             {"post": "yes"}).status_code == 403
    assert admin_client.post(change, {"status": "processed"}).status_code == 403
    response = admin_client.get(reverse("admin:rules_inboundevent_changelist"))
    assert "delete_selected" not in response.context["action_form"].fields["action"].choices.__repr__()
    response = admin_client.get(change)
    page = response.content.decode()
    assert "No member &#x27;late-joiner&#x27; in this program." in page
    assert "&quot;event_id&quot;: &quot;e-late&quot;" in page  # the pretty payload
    rejected_event.refresh_from_db()
    assert rejected_event.status == "rejected"


def test_inbox_detail_shows_the_trace(admin_client, program, member, spend_rule):
    event = event_submit(program=program, partner=None, payload=purchase("e-1", member.external_id)).event
    page = admin_client.get(reverse("admin:rules_inboundevent_change", args=[event.pk])).content.decode()
    assert "1 point per unit" in page and "Fired" in page and "<strong>42</strong>" in page


def test_inbox_filters_and_search(admin_client, program, rejected_event):
    url = reverse("admin:rules_inboundevent_changelist")
    for params in ({"status__exact": "rejected"}, {"type": "purchase"}, {"program__id__exact": program.pk},
                   {"q": "e-late"}, {"q": "late-joiner"}, {"q": "o-e-late"}):
        assert admin_client.get(url, params).context["cl"].result_count == 1, params
    assert admin_client.get(url, {"q": "late"}).context["cl"].result_count == 0


def test_inbox_status_filter_finds_each_status(admin_client, program, member, spend_rule, rejected_event):
    processed = event_submit(program=program, partner=None, payload=purchase("e-ok", member.external_id)).event
    waiting = events_submit_batch(program=program, partner=None,
                                  payloads=[purchase("e-wait", member.external_id)]).received_ids
    failed = events_submit_batch(program=program, partner=None, payloads=[purchase("e-fail", member.external_id)])
    InboundEvent.objects.filter(pk__in=failed.received_ids).update(
        status="failed", error={"type": "api_error", "code": "processing_failed", "message": "boom", "param": None})
    url = reverse("admin:rules_inboundevent_changelist")
    expected = {"processed": [processed.pk], "received": waiting, "rejected": [rejected_event.pk],
                "failed": failed.received_ids}
    for status, ids in expected.items():
        listed = admin_client.get(url, {"status__exact": status}).context["cl"].result_list
        assert [event.pk for event in listed] == ids, status


def test_inbox_finds_rejected_and_waiting_events_without_reading_the_others(admin_client, program, member,
                                                                             rejected_event):
    events_submit_batch(program=program, partner=None, payloads=[purchase("e-wait", member.external_id)])
    url = reverse("admin:rules_inboundevent_changelist")
    rejected = admin_client.get(url, {"status__exact": "rejected", "program__id__exact": program.pk}).context["cl"]
    waiting = admin_client.get(url, {"status__exact": "received", "program__id__exact": program.pk}).context["cl"]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be read whole otherwise
        cursor.execute("SET LOCAL enable_sort = off")  # and another index's rows sorted (as below)
    assert "event_problem" in rejected.queryset.explain()  # the partial index of the events with an error
    plan = waiting.queryset.explain()
    assert "rules_eventbatch" in plan and "rules_inboundevent_pkey" in plan, plan  # by id, from the batches


def test_inbox_changelist_queries_do_not_grow_with_events(admin_client, program, member, spend_rule):
    url = reverse("admin:rules_inboundevent_changelist")
    event_submit(program=program, partner=None, payload=purchase("e-0", member.external_id))
    with CaptureQueriesContext(connection) as one:
        admin_client.get(url)
    for n in range(1, 6):
        event_submit(program=program, partner=None, payload=purchase(f"e-{n}", member.external_id))
    with CaptureQueriesContext(connection) as six:
        response = admin_client.get(url)
    assert response.context["cl"].result_count == 6
    assert len(six) == len(one)


def test_inbox_pages_come_from_an_index_with_and_without_the_program_filter(admin_client, program, member,
                                                                           rejected_event, make_program):
    """Newest first without sorting the table: by primary key across programs, by event_recent
    (program, received_at) within one."""
    other = make_program(enroll_on_first_event=True)  # two programs: the admin then offers the filter
    url = reverse("admin:rules_inboundevent_changelist")
    event_submit(program=program, partner=None, payload=purchase("e-new", member.external_id))
    event_submit(program=other, partner=None, payload=purchase("e-other", "someone"))
    every = admin_client.get(url).context["cl"]
    mine = admin_client.get(url, {"program__id__exact": program.pk}).context["cl"]
    assert [event.event_id for event in every.result_list] == ["e-other", "e-new", rejected_event.event_id]
    assert [event.event_id for event in mine.result_list] == ["e-new", rejected_event.event_id]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be read whole otherwise
        # and sorted: with a few rows, reading another index of the program and sorting costs the
        # planner as little, and which it picks then depends on the statistics of the moment.
        cursor.execute("SET LOCAL enable_sort = off")
    plan = every.queryset.explain()
    assert "Index Scan Backward using rules_inboundevent_pkey" in plan and "Sort" not in plan, plan
    plan = mine.queryset.explain()
    assert "event_recent" in plan, plan  # (an incremental sort of the rare rows received at one time, by id)


def test_try_it_applies_the_programs_window_for_late_events(admin_client, make_program, make_member):
    program = make_program(event_max_age_days=7)
    make_member(program, external_id="m")
    late = dict(purchase("t", "m"), occurred_at=(timezone.now() - dt.timedelta(days=8)).isoformat())
    response = admin_client.post(reverse("admin:rules_rule_try"),
                                 {"program": program.pk, "member": "m", "event": json.dumps(late)})
    assert "occurred_at is more than 7 days ago" in response.context["form"].errors["event"][0]
    assert response.context["result"] is None
