"""Admin forms for rules and event types, and the "try it" form that previews an event.

The rule and event-type forms only check shape; what a rule must satisfy is decided by
``rules.services`` so that admin, API and import agree.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import construct_instance
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from accounts.models import Member, Program
from ledger.models import Balance
from loyalty.jsontext import MESSAGES, unstorable
from rules import engine, pipeline
from rules.models import EventType, Rule
from rules.services import rule_check
from rules.validation import BUILTIN_SCHEMAS, EventInvalid, event_clean, schema_check
from rules.validation import EVENT_TYPE_PATTERN as EVENT_TYPE_NAME


class WordListField(forms.CharField):
    """A JSON list of strings in the model, "LATTE, MOCHA" on the page."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def to_python(self, value) -> list[str]:
        return [part.strip() for part in (super().to_python(value) or "").split(",") if part.strip()]


class EventTypeInput(forms.TextInput):
    """A text input suggesting the known event types (a typo would make a rule that never fires)."""

    def render(self, name, value, attrs=None, renderer=None):
        names = sorted({*BUILTIN_SCHEMAS, *EventType.objects.values_list("name", flat=True)})
        attrs = {**(attrs or {}), "list": f"{name}-choices"}
        options = format_html_join("", '<option value="{}">', ((n,) for n in names))
        return format_html('{}<datalist id="{}">{}</datalist>', super().render(name, value, attrs, renderer),
                           f"{name}-choices", options)


class RuleForm(forms.ModelForm):
    skus = WordListField(required=False, help_text="Product rules: matching SKUs, comma-separated, e.g. LATTE, MOCHA.")
    categories = WordListField(
        required=False, help_text="Product rules: matching categories, comma-separated, e.g. coffee, tea."
    )

    class Meta:
        model = Rule
        fields = (
            "program", "name", "kind", "is_active", "priority", "stacking", "event_type", "active_from",
            "active_until", "condition", "points_per_unit", "rounding", "min_amount", "skus", "categories",
            "points_per_item", "item_multiplier", "points", "multiplier", "points_expression",
            "max_points_per_event", "member_cap_period", "member_cap_points", "member_cap_times",
        )
        widgets = {
            "event_type": EventTypeInput,
            "condition": forms.Textarea(attrs={"rows": 3, "class": "vLargeTextField", "spellcheck": "false"}),
            "points_expression": forms.Textarea(
                attrs={"rows": 2, "class": "vLargeTextField", "spellcheck": "false"}
            ),
        }
        help_texts = {
            "event_type": "purchase, signup or one of the program's custom event types. Empty: every type.",
            "points_per_unit": "Spend and product rules: points per unit of currency spent.",
            "rounding": "Spend and product rules: how a fraction of a point is rounded.",
            "min_amount": "Spend rules: a purchase below this amount earns nothing.",
            "points_per_item": "Product rules: points per matching unit. Empty: points per unit x item multiplier "
            "x the line's amount.",
            "item_multiplier": "Product rules without points per item: points per unit x this x the line's amount.",
            "points": "Event rules: the points given each time the rule fires.",
            "multiplier": "Multiplier rules: 2 doubles what the other rules awarded (this rule adds the extra 1x).",
            "max_points_per_event": "Most points this rule gives for one event.",
            "member_cap_period": "The period the member caps below count over.",
        }

    def clean(self):
        cleaned_data = super().clean()
        # A copy: the form fills the real instance itself, after clean().
        candidate = construct_instance(self, copy.copy(self.instance), self._meta.fields, self._meta.exclude)
        try:
            rule_check(candidate)
        except ValidationError as exc:
            for field_name, messages in exc.message_dict.items():
                # A field that failed its own validation was checked with its old value: skip it.
                if field_name not in self.errors:
                    self.add_error(field_name if field_name in self.fields else None, messages)
        return cleaned_data


class EventTypeForm(forms.ModelForm):
    class Meta:
        model = EventType
        fields = ("program", "name", "description", "schema")
        help_texts = {"name": "The event's `type`: lower-case letters, digits and underscores, e.g. review_written."}

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if not EVENT_TYPE_NAME.match(name):
            raise ValidationError("Use lower-case letters, digits and underscores, starting with a letter.")
        if name in BUILTIN_SCHEMAS:
            raise ValidationError(f"{name!r} is a built-in event type.")
        return name

    def clean_schema(self) -> dict:
        schema = self.cleaned_data["schema"]
        if schema in (None, ""):
            return {}
        reason = unstorable(schema)
        if reason:
            raise ValidationError(MESSAGES[reason])
        # event_type_save checks this too; here so the message lands on the field.
        try:
            schema_check(schema)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        return schema


# --- try it ----------------------------------------------------------------------------------

EXAMPLE_PURCHASE = {
    "event_id": "try-1",
    "type": "purchase",
    "properties": {
        "order_id": "order-1", "amount": "42.50", "currency": "USD", "channel": "pos",
        "items": [{"sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": "4.50"}],
    },
}


def example_event(event_type: str = "") -> str:
    if event_type and event_type != "purchase":
        return json.dumps({"event_id": "try-1", "type": event_type, "properties": {}}, indent=2)
    return json.dumps(EXAMPLE_PURCHASE, indent=2)


@dataclass
class TryResult:
    awards: list[engine.Award] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(award.points for award in self.awards)


class TryItForm(forms.Form):
    program = forms.ModelChoiceField(queryset=Program.objects.all())
    member = forms.CharField(
        max_length=255, required=False,
        help_text="The member's external id; it replaces the event's member_id. Empty: the event's member_id.",
    )
    event = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 14, "cols": 80, "class": "vLargeTextField", "spellcheck": "false"}),
        help_text="The event as a partner would send it. Without occurred_at it happens now.",
    )

    def __init__(self, *args, program: Program | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_program = program
        if program is not None:
            del self.fields["program"]
        self.fields["event"].initial = example_event()

    def clean_event(self) -> dict:
        try:
            payload = json.loads(self.cleaned_data["event"])
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise ValidationError(f"This is not valid JSON: {exc.msg} ({where}).") from None
        if not isinstance(payload, dict):
            raise ValidationError("An event is a JSON object: {...}.")
        _kept, refused = pipeline.keepable(payload)  # what the API refuses before any rule sees it
        if refused is not None:
            raise ValidationError(f"{refused.message} ({refused.code})")
        return payload

    def clean(self):
        cleaned_data = super().clean()
        program = self.fixed_program or cleaned_data.get("program")
        payload = cleaned_data.get("event")
        if program is None or payload is None:
            return cleaned_data
        if cleaned_data.get("member"):
            payload = {**payload, "member_id": cleaned_data["member"]}
        self.now = timezone.now()
        try:
            cleaned_data["clean_event"] = event_clean(
                payload, custom_schemas=pipeline.custom_schemas(program), now=self.now,
                max_age_days=program.event_max_age_days,
            )
        except EventInvalid as exc:
            on_member = exc.param == "member_id" and cleaned_data.get("member")
            self.add_error("member" if on_member else "event", f"{exc.message} ({exc.code})")
            return cleaned_data
        cleaned_data["program"] = program
        cleaned_data["member_row"] = self._member(program, cleaned_data["clean_event"].member_id)
        return cleaned_data

    def _member(self, program: Program, external_id: str) -> Member | None:
        member = Member.objects.filter(program=program, external_id=external_id).first()
        if member is None and not program.enroll_on_first_event:
            field_name = "member" if self.cleaned_data.get("member") else "event"
            self.add_error(field_name, f"No member {external_id!r} in {program}.")
        return member

    def result(self) -> TryResult:
        """What the program's saved, active rules would award for this event, posting nothing."""
        program, clean = self.cleaned_data["program"], self.cleaned_data["clean_event"]
        member = self.cleaned_data["member_row"]
        result = TryResult()
        if clean.type == "refund":
            result.notes.append("A refund does not go through the earning rules: it takes back a share of the "
                                "points its purchase earned.")
            return result
        if member is None:
            result.notes.append(f"{clean.member_id!r} is not a member yet; this program enrolls on the first "
                                "event, so this is what a new member would get.")
            member = Member(program=program, external_id=clean.member_id, enrolled_at=self.now)
        rules = engine.rules_for(program)
        balance = Balance.objects.filter(member_id=member.pk).first() if member.pk else None
        # The same usage read as the pipeline's, so caps count what the member already got.
        usage = pipeline.rule_usage(rules, [member.pk])[member.pk] if member.pk else {}
        qualification = engine.qualify(
            rules=rules, event=pipeline.event_context(clean), member=pipeline.member_context(member, balance),
            program=pipeline.program_context(program), now=self.now, usage=usage,
        )
        result.awards, result.trace = qualification.awards, qualification.trace
        return result
