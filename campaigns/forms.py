"""Admin forms for rewards and their voucher codes."""

from __future__ import annotations

import csv
import io

from django import forms

from campaigns.models import Reward, VoucherCode

MAX_UPLOAD_BYTES = 5 * 1024 * 1024


class RewardForm(forms.ModelForm):
    class Meta:
        model = Reward
        fields = ("program", "code", "name", "description", "is_active", "cost", "stock", "per_member_limit",
                  "active_from", "active_until", "vouchers")
        help_texts = {
            "name": "What members see.",
            "is_active": "Untick to withdraw the reward at once, whatever its window.",
            "active_from": "Empty: available from now on.",
            "active_until": "Empty: no end. The reward stops being available at this moment.",
            "stock": "Units left; each redemption takes its quantity and a void or cancel gives it back. "
                     "Empty: unlimited. Leave empty for an uploaded pool: its free codes are its stock.",
            "vouchers": "Generated: each redemption gets a new random code. Uploaded pool: each redemption "
                        "gets one of the codes you upload (\"Upload voucher codes\" on this page), each code "
                        "once; when the pool is empty the reward is out of stock.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The page carries the stock it showed, so that saving it can tell what the marketer changed
        # from what redemptions took meanwhile (``RewardAdmin.save_model``).
        self.fields["stock"].show_hidden_initial = True

    def stock_as_loaded(self) -> int | None:
        """The stock the page showed when it was loaded (the current one if it did not say)."""
        field = self.fields["stock"]
        shown = self.data.get(self.add_initial_prefix("stock"))
        if shown is None:
            return self.initial.get("stock")
        try:
            return field.to_python(shown)
        except forms.ValidationError:
            return self.initial.get("stock")

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("active_from"), cleaned.get("active_until")
        if start and end and end <= start:
            self.add_error("active_until", "The window must end after it starts.")
        vouchers = cleaned.get("vouchers")
        if vouchers == Reward.Vouchers.POOL and cleaned.get("stock") is not None:
            # A separate count would drift from the pool: a cancel gives stock back but never its code.
            self.add_error("stock", "A pool reward's stock is its free codes: leave this empty.")
        if self.instance.pk and self.instance.vouchers == Reward.Vouchers.POOL and vouchers != Reward.Vouchers.POOL:
            free = VoucherCode.objects.filter(reward=self.instance, redemption__isnull=True).count()
            if free:
                self.add_error("vouchers", f"The pool still has {free} free code(s); delete them first.")
        return cleaned


class VoucherUploadForm(forms.Form):
    codes = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 12, "cols": 60, "spellcheck": "false"}),
        help_text="One code per line. Spaces around a code and blank lines are ignored.",
    )
    file = forms.FileField(
        required=False, label="or a file",
        help_text="A .txt or .csv file (UTF-8), one code per line; of a CSV only the first column is read, "
                  "so leave out any header row.",
    )

    def clean_file(self):
        upload = self.cleaned_data.get("file")
        if upload is None:
            return None
        if not upload.name.lower().endswith((".txt", ".csv")):
            raise forms.ValidationError("Upload a .txt or .csv file.")
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The file is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB; split it.")
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError("The file is not UTF-8 text.") from None
        if "\x00" in text:
            raise forms.ValidationError("The file holds a NUL character (\\x00): it is not a text file of codes.")
        if upload.name.lower().endswith(".csv"):
            try:
                return [row[0] if row else "" for row in csv.reader(io.StringIO(text))]
            except csv.Error as exc:
                raise forms.ValidationError(f"The CSV file cannot be read: {exc}.") from None
        return text.splitlines()

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        lines = [*cleaned.get("codes", "").splitlines(), *(cleaned.get("file") or [])]
        codes = [line.strip() for line in lines if line.strip()]
        if not codes:
            raise forms.ValidationError("Paste some codes or choose a file.")
        max_length = VoucherCode._meta.get_field("code").max_length
        bad = [code for code in codes if len(code) > max_length or "," in code]
        if bad:
            raise forms.ValidationError(
                f"Codes must be at most {max_length} characters, without commas. Not accepted: "
                f"{'; '.join(repr(code[:80]) for code in bad[:5])}{' ...' if len(bad) > 5 else ''}"
            )
        seen: set[str] = set()
        repeated: list[str] = []
        for code in codes:
            if code in seen:
                repeated.append(code)
            seen.add(code)
        cleaned["unique_codes"] = list(dict.fromkeys(codes))
        cleaned["repeated"] = list(dict.fromkeys(repeated))
        return cleaned
