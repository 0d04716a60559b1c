"""Forms of the deployment pages. They only parse input; the services validate and decide
(bounds, references, conflicts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms

from apps.environments.models import Environment, EnvironmentState

FOLLOW_HELP = "The deployment follows this alias: every version it points at is rolled out."
FROM_RUN = ""
FROM_RUN_LABEL = "From the training run (the environment it recorded, else the project's)"


def _choice_label(env: Environment) -> str:
    state = "" if env.state == EnvironmentState.READY else f" ({env.get_state_display().lower()})"
    description = f" — {env.description.splitlines()[0]}" if env.description.strip() else ""
    return f"{env.label}{state}{description}"[:200]


class DeploymentSettingsForm(forms.Form):
    """What the edit page changes (and the create page sets after the name and model)."""

    alias = forms.CharField(required=False, max_length=255, label="Alias to follow", help_text=FOLLOW_HELP)
    version = forms.IntegerField(
        required=False,
        min_value=1,
        label="…or pin a version",
        help_text="Empty: follow the alias. A pinned version is served whatever the alias says.",
    )
    canary_percent = forms.IntegerField(label="Canary share (%)", initial=10)
    canary_minutes = forms.FloatField(label="Canary duration (minutes)", initial=5)
    max_error_rate = forms.FloatField(
        label="Largest 5xx rate (fraction)", initial=0.05, help_text="0.05 = 5 % of the canary's requests."
    )
    max_p95_ms = forms.IntegerField(label="Largest p95 latency (ms)", initial=1000)
    min_replicas = forms.IntegerField(label="Replicas (min)", initial=1)
    max_replicas = forms.IntegerField(label="Replicas (max)", initial=1)
    input_example = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        label="Input example (JSON)",
        help_text='A request in MLflow\'s scoring protocol, e.g. {"dataframe_split": {"columns": [...], '
        '"data": [[...]]}}. Empty: the model\'s own serving_input_example.json.',
    )
    capture_samples = forms.BooleanField(required=False, label="Keep a capped sample of requests and answers")
    environment = forms.ChoiceField(
        required=False,
        label="Environment",
        help_text="What the model server runs in. Changing it starts a new revision of the served version; its "
        "pre-flight checks the model's requirements against the environment first.",
    )

    def __init__(self, *args: Any, environments: Sequence[Environment] = (), **kwargs: Any) -> None:
        """`environments`: those the user may pick (selectable ones they may use, and the
        deployment's current one even when it no longer is)."""
        super().__init__(*args, **kwargs)
        field = self.fields["environment"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(FROM_RUN, FROM_RUN_LABEL)] + [(str(env.pk), _choice_label(env)) for env in environments]

    def service_values(self) -> dict[str, Any]:
        """The cleaned data as the services take it (empty alias and version left out;
        the environment an id, or None for the training run's)."""
        data = dict(self.cleaned_data)
        if "environment" in data:
            data["environment"] = int(data["environment"]) if data["environment"] else None
        if data.get("version") is None:
            data.pop("version", None)
            if not data.get("alias"):
                data["version"] = None
                data.pop("alias", None)
        else:
            data.pop("alias", None)
        return data


class DeploymentCreateForm(DeploymentSettingsForm):
    name = forms.CharField(
        max_length=45,
        label="Name",
        help_text="Lowercase letters, digits and hyphens; it is part of the URL callers use.",
    )
    model = forms.ChoiceField(label="Registered model")
    field_order = ["name", "model"]

    def __init__(self, *args: Any, models: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.models = models
        field = self.fields["model"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(m, m) for m in models]
        self.fields["alias"].initial = "champion"

    def service_values(self) -> dict[str, Any]:
        data = super().service_values()
        if data.get("version") is None and "alias" not in data:
            data.pop("version", None)  # a new deployment follows champion by default
        return data


class ServingKeyForm(forms.Form):
    name = forms.CharField(
        max_length=80, label="Key name", help_text="Who uses it, e.g. the service that calls the model."
    )


# The chart windows a deployment page offers (minutes); "" (the default) is adaptive.
CHART_WINDOWS = {15: "15 minutes", 60: "1 hour", 360: "6 hours", 1440: "24 hours"}


class ChartWindowForm(forms.Form):
    """?window= of a deployment page: the minutes its charts span (15, 60, 360 or 1440);
    absent, empty or invalid: adaptive (the last hour, or from just before the deployment
    was created when that is later)."""

    window = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", "Adaptive"), *((str(m), label) for m, label in CHART_WINDOWS.items())],
    )

    def minutes(self) -> int | None:
        """The chosen window in minutes, or None (adaptive, also for an invalid value)."""
        if not self.is_valid():
            return None
        value = self.cleaned_data.get("window")
        return int(value) if value else None
