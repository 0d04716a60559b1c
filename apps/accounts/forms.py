from __future__ import annotations

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
