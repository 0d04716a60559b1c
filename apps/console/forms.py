from __future__ import annotations

import json
from typing import Any

from django import forms

from apps.access.roles import Role
from apps.projects.models import Backend


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="The SSO username where SSO is on.")
    email = forms.EmailField(required=False)
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    password = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        help_text="Leave empty for an SSO-only account (invite); set one for a local or break-glass account.",
    )
    is_platform_admin = forms.BooleanField(required=False, label="Platform admin")


class BudgetForm(forms.Form):
    gpu_budget = forms.IntegerField(min_value=0, label="GPU budget")


class SsoMappingForm(forms.Form):
    group = forms.CharField(max_length=150, help_text="The group name as the identity provider sends it.")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class JsonField(forms.CharField):
    """A JSON value typed into a textarea (parameters, resources, the command)."""

    def __init__(self, *, kind: type, **kwargs: Any) -> None:
        self.kind = kind
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        return value if isinstance(value, str) else json.dumps(value)

    def to_python(self, value: Any) -> Any:
        text = str(super().to_python(value) or "")
        if not text:
            return self.kind()
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(parsed, self.kind):
            raise forms.ValidationError(f"Expected a JSON {'list' if self.kind is list else 'object'}.")
        return parsed


class TemplateForm(forms.Form):
    team = forms.ChoiceField(required=False, help_text="Empty: a global template (platform admins).")
    slug = forms.CharField(max_length=40)
    name = forms.CharField(max_length=120)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    image = forms.CharField(max_length=300)
    command = JsonField(kind=list, help_text='e.g. ["python", "train.py", "--lr={lr}"]')
    parameters = JsonField(kind=dict, required=False, help_text='e.g. {"lr": {"type": "float", "default": 0.01}}')
    default_resources = JsonField(kind=dict, required=False, help_text='e.g. {"cpu": "1", "memory": "2Gi", "gpus": 0}')
    max_resources = JsonField(kind=dict, required=False, help_text='e.g. {"cpu": "8", "memory": "64Gi", "gpus": 2}')
    max_runtime_seconds = forms.IntegerField(min_value=1, initial=3600)
    objective = JsonField(
        kind=dict,
        required=False,
        help_text='What sweeps over it optimise first, e.g. {"metric": "loss", "direction": "min"}: a metric the '
        "script logs at every step, so early stopping can act. Empty: none suggested.",
    )
    backends = forms.MultipleChoiceField(
        choices=Backend.choices, widget=forms.CheckboxSelectMultiple, initial=[Backend.LOCAL, Backend.KUBERNETES]
    )
    is_active = forms.BooleanField(required=False, initial=True, label="Active (offered in the launch form)")
    environment = forms.ChoiceField(
        required=False,
        help_text="Pin the environment its launches run in (platform-wide or the template's team's own); "
        "empty: each project's default.",
    )

    def __init__(
        self,
        *args: Any,
        teams: list[tuple[str, str]],
        editing: bool = False,
        environments: Any = (),
        current_environment: Any = None,
        **kwargs: Any,
    ) -> None:
        from apps.projects.forms import environment_field_choices

        super().__init__(*args, **kwargs)
        self.fields["team"].choices = teams  # type: ignore[attr-defined]
        self.fields["environment"].choices = [  # type: ignore[attr-defined]
            ("", "— (the project's default)"),
            *environment_field_choices(environments, current_environment),
        ]
        if editing:
            del self.fields["team"]
            del self.fields["slug"]
