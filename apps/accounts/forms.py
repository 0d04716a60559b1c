from __future__ import annotations

from typing import Any

from django import forms

from apps.access.roles import Role


class AddMemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class TeamForm(forms.Form):
    slug = forms.CharField(max_length=40, help_text="Lowercase letters, digits and hyphens.")
    name = forms.CharField(max_length=120)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    gpu_budget = forms.IntegerField(min_value=0, initial=0, label="GPU budget")
    lead = forms.CharField(max_length=150, required=False, help_text="Username of the first lead (optional).")


class TokenForm(forms.Form):
    name = forms.CharField(max_length=80, help_text="Where the token is used, e.g. 'laptop' or 'ci-pipeline'.")
    expires_in_days = forms.IntegerField(min_value=1, max_value=3650, required=False, label="Expires in (days)")


class TimeZoneForm(forms.Form):
    time_zone = forms.ChoiceField(
        required=False,
        label="Time zone",
        help_text="Times on every page are shown in this zone, labelled; the API answers ISO 8601 with an offset.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from apps.core.timezones import zone_choices

        super().__init__(*args, **kwargs)
        self.fields["time_zone"].choices = zone_choices()  # type: ignore[attr-defined]
