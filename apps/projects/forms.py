from __future__ import annotations

from typing import Any

from django import forms

from apps.accounts.models import Team
from apps.projects.models import Backend, default_backend


class ProjectCreateForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none(), to_field_name="slug")
    slug = forms.CharField(max_length=40, help_text="Lowercase letters, digits and hyphens.")
    name = forms.CharField(max_length=120)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    gpu_quota = forms.IntegerField(min_value=0, initial=0, label="GPU quota")
    backend = forms.ChoiceField(choices=Backend.choices, initial=default_backend)
    namespace = forms.CharField(max_length=63, required=False, help_text="Default: plinth-<team>-<project>.")
    mlflow_experiment = forms.CharField(
        max_length=250,
        required=False,
        help_text="A new experiment Plinth creates. Default: <team>/<project>.",
    )
    attach_existing = forms.BooleanField(
        required=False,
        label="Attach the existing experiment of that name",
        help_text="Platform admins only: link an experiment that already exists in MLflow.",
    )

    def __init__(self, *args: Any, teams: Any = None, is_admin: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams if teams is not None else Team.objects.none()  # type: ignore[attr-defined]
        if not is_admin:
            del self.fields["attach_existing"]


class ExperimentAttachForm(forms.Form):
    experiment = forms.CharField(max_length=250, help_text="The MLflow experiment's id or name.")


class ExperimentReplaceForm(forms.Form):
    name = forms.CharField(
        max_length=250,
        required=False,
        label="New experiment name",
        help_text="Leave empty for <team>/<project>-2 (the deleted experiment keeps its name in MLflow).",
    )


def environment_field_choices(environments: Any, current: Any = None) -> list[tuple[str, str]]:
    """Choices of an environment field: the usable environments (id, label), the current
    one first when it is no longer offered (so saving other fields keeps it)."""
    choices = [(str(e.pk), e.label if e.state == "ready" else f"{e.label} ({e.state})") for e in environments]
    if current is not None and str(current.pk) not in {pk for pk, _ in choices}:
        choices.insert(0, (str(current.pk), f"{current.label} ({current.state})"))
    return choices


class ProjectEditForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    gpu_quota = forms.IntegerField(min_value=0, label="GPU quota")
    backend = forms.ChoiceField(choices=Backend.choices)
    environment = forms.ChoiceField(
        required=False,
        help_text="The environment its launches run in unless their template pins one.",
    )

    def __init__(self, *args: Any, environments: Any = (), current_environment: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = environment_field_choices(environments, current_environment)
        self.fields["environment"].choices = [("", "—"), *choices] if current_environment is None else choices  # type: ignore[attr-defined]
