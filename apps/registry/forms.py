"""Forms of the models pages. They only parse input; the services validate and decide."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.registry.models import Comparison


class PromotionForm(forms.Form):
    version = forms.TypedChoiceField(coerce=int, label="Version")
    alias = forms.ChoiceField(label="Alias")
    justification = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        max_length=5000,
        help_text="Why this version: what changed, what you checked. The approvers decide on it.",
    )

    def __init__(self, *args: Any, versions: list[int], aliases: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["version"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(v, f"version {v}") for v in versions]
        alias = self.fields["alias"]
        assert isinstance(alias, forms.ChoiceField)
        alias.choices = [(a, a) for a in aliases]


class DecisionForm(forms.Form):
    comment = forms.CharField(required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2}))


class RollbackForm(forms.Form):
    alias = forms.CharField(max_length=255)
    justification = forms.CharField(max_length=5000, widget=forms.Textarea(attrs={"rows": 2}))
    emergency = forms.BooleanField(required=False, label="Emergency: roll back now, without waiting for approval")


class AttachForm(forms.Form):
    name = forms.CharField(max_length=256, label="Registered model name")


class PolicyForm(forms.Form):
    approvers = forms.CharField(
        required=False,
        label="Approvers",
        help_text="Usernames, comma-separated. Empty: the team's leads.",
    )
    required_approvals = forms.IntegerField(min_value=1, max_value=10, label="Approvals needed")
    expiry_days = forms.IntegerField(min_value=1, max_value=90, label="Requests expire after (days)")
    allowed_aliases = forms.CharField(
        label="Aliases that may be requested", help_text="Comma-separated, e.g. champion, staging."
    )
    gate_metric = forms.CharField(required=False, max_length=250, label="Gate metric", help_text="Empty: no gate.")
    gate_comparison = forms.ChoiceField(
        required=False, choices=[("", "—"), *Comparison.choices], label="must be … the current holder's"
    )


class WebhookForm(forms.Form):
    url = forms.URLField(
        max_length=500,
        label="Webhook URL",
        assume_scheme="https",
        help_text="A public http(s) address. Internal addresses are refused unless a platform admin allow-lists them.",
    )
    # Never rendered back into the page: a refused save must not echo a typed secret.
    secret = forms.CharField(
        required=False,
        max_length=128,
        label="Signing secret",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Empty: keep the current one (or make one for a new webhook). At least 16 characters.",
    )
    is_active = forms.BooleanField(required=False, initial=True, label="Send notifications to it")
