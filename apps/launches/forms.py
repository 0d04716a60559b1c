"""The launch form is generated from the template: one field per parameter, plus resources."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.launches.models import ParamType, SweepStrategy, Template
from apps.launches.validation import DEPRECATED_GPU_KEY, with_gpu_product
from apps.projects.forms import environment_field_choices

RESOURCE_FIELDS = {"cpu": "cpu", "memory": "memory", "gpus": "gpus", "gpu_product": "gpu_product"}


def param_field(name: str, spec: dict[str, Any]) -> forms.Field:
    kind = spec.get("type", ParamType.STR)
    common: dict[str, Any] = {"label": name, "help_text": spec.get("help", ""), "initial": spec.get("default")}
    if kind == ParamType.INT:
        return forms.IntegerField(min_value=spec.get("min"), max_value=spec.get("max"), **common)
    if kind == ParamType.FLOAT:
        return forms.FloatField(min_value=spec.get("min"), max_value=spec.get("max"), **common)
    if kind == ParamType.BOOL:
        return forms.BooleanField(required=False, **common)
    if kind == ParamType.CHOICE:
        return forms.TypedChoiceField(
            choices=[(c, str(c)) for c in spec.get("choices", [])],
            coerce=lambda v, s=spec: next(c for c in s["choices"] if str(c) == v),
            **common,
        )
    return forms.CharField(required=False, max_length=1000, strip=False, **common)


def gpu_field(default: int, template_limit: int, host_gpus: int | None) -> forms.IntegerField:
    """The GPU count, capped by the template and, on the local backend, by the host: a host
    without GPUs gets a field fixed at 0 that says why, not "at most 1"."""
    if host_gpus == 0:
        return forms.IntegerField(
            initial=0,
            min_value=0,
            max_value=0,
            disabled=True,
            label="GPUs",
            help_text="0: this host has no GPUs (NVML finds none), so the local backend runs on CPU only.",
        )
    if template_limit == 0:
        reason = "0: this template runs without GPUs."
        return forms.IntegerField(initial=0, min_value=0, max_value=0, disabled=True, label="GPUs", help_text=reason)
    cap = template_limit if host_gpus is None else min(template_limit, host_gpus)
    reason = "this host's GPUs" if host_gpus is not None and host_gpus < template_limit else "the template's limit"
    return forms.IntegerField(
        initial=min(default, cap), min_value=0, max_value=cap, label="GPUs", help_text=f"at most {cap} ({reason})"
    )


def _default_choice(pinned: Any, projects: list[Any]) -> str:
    """The label of the launch form's first environment choice: what a launch that names none
    runs in — the template's pin, else the project's default (named when one project is
    offered), with its state when that is not plain ready."""
    if pinned is not None:
        env, whose = pinned, "pinned by the template"
    elif len(projects) == 1 and getattr(projects[0], "environment", None) is not None:
        env, whose = projects[0].environment, "the project's default"
    else:
        return "the project's default environment"
    state = "" if env.state == "ready" else f", {env.get_state_display().lower()}"
    return f"{env.label} ({whose}{state})"


class LaunchForm(forms.Form):
    project = forms.ChoiceField(label="Project")
    name = forms.CharField(required=False, max_length=120, help_text="Optional; shown in lists and in MLflow.")

    environment = forms.ChoiceField(
        required=False,
        help_text="The first choice is the template's pinned environment, else the project's default.",
    )

    def __init__(
        self,
        *args: Any,
        template: Template,
        projects: list[Any],
        host_gpus: int | None = None,
        environments: Any = (),
        **kwargs: Any,
    ) -> None:
        """`host_gpus`: how many GPUs the local backend's host has, when every project offered
        runs there (None when a project could run elsewhere): the GPU field is capped by it.
        `environments`: the ones a launch may ask for (the service checks again)."""
        super().__init__(*args, **kwargs)
        self.template = template
        self.fields["project"].choices = [(str(p.pk), p.full_slug) for p in projects]  # type: ignore[attr-defined]
        pinned = template.environment
        default = _default_choice(pinned, projects)
        self.fields["environment"].choices = [  # type: ignore[attr-defined]
            ("", default),
            *environment_field_choices(environments),
        ]
        for name, spec in template.parameters.items():
            self.fields[f"param_{name}"] = param_field(name, spec)
        defaults = {"cpu": "1", "memory": "1Gi", "gpus": 0, "gpu_product": "", **template.default_resources}
        limits = template.max_resources
        self.fields["cpu"] = forms.CharField(
            initial=defaults["cpu"], label="CPU", help_text=f"e.g. 2 or 500m; at most {limits.get('cpu', '—')}"
        )
        self.fields["memory"] = forms.CharField(
            initial=defaults["memory"], label="Memory", help_text=f"e.g. 4Gi; at most {limits.get('memory', '—')}"
        )
        self.fields["gpus"] = gpu_field(defaults["gpus"], int(limits.get("gpus", 0)), host_gpus)
        self.fields["gpu_product"] = forms.CharField(
            initial=defaults["gpu_product"],
            required=False,
            label="GPU product",
            help_text="node label nvidia.com/gpu.product (optional)",
        )

    def parameter_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith("param_")]

    def resource_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in RESOURCE_FIELDS]

    def parameters(self) -> dict[str, Any]:
        return {name[6:]: value for name, value in self.cleaned_data.items() if name.startswith("param_")}

    def clean_gpu_product(self) -> str:
        """The GPU product (a node label value, "" for any GPU). A post that still names the
        field `gpu_model` (deprecated) is read as this one; both given and different is an
        error on this field."""
        given = {"gpu_product": self.cleaned_data["gpu_product"]} if "gpu_product" in self.data else {}
        if DEPRECATED_GPU_KEY in self.data:
            given[DEPRECATED_GPU_KEY] = str(self.data[DEPRECATED_GPU_KEY]).strip()
        errors: dict[str, list[str]] = {}
        clean = with_gpu_product(given, "resources", errors)
        if errors:
            raise forms.ValidationError(next(iter(errors.values())))
        return str(clean.get("gpu_product", self.cleaned_data["gpu_product"]))

    def resources(self) -> dict[str, Any]:
        return {key: self.cleaned_data[field] for key, field in RESOURCE_FIELDS.items()}

    def service_field(self, key: str) -> str | None:
        """The form field for a service error key ("parameters.epochs" -> "param_epochs")."""
        group, _, name = key.partition(".")
        if group == "parameters" and f"param_{name}" in self.fields:
            return f"param_{name}"
        if group == "resources" and name in RESOURCE_FIELDS:
            return name
        return key if key in self.fields else None


class SweepForm(forms.Form):
    project = forms.ChoiceField(label="Project")
    name = forms.CharField(required=False, max_length=120)
    strategy = forms.ChoiceField(
        choices=SweepStrategy.choices,
        help_text="Bayesian (TPE) and CMA-ES choose each trial from the results so far and optimise the metric "
        "below; CMA-ES needs at least one range.",
    )
    space = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        label="Search space (JSON)",
        help_text='e.g. {"learning_rate": {"min": 0.0001, "max": 0.1, "log": true}, "alpha": [0.0001, 0.001]}; '
        "ranges ({min, max}) need Random, Bayesian or CMA-ES; Grid takes lists.",
    )
    max_trials = forms.IntegerField(min_value=1, max_value=1000, initial=12)
    parallelism = forms.IntegerField(min_value=1, max_value=1000, initial=3)
    metric = forms.CharField(required=False, initial="accuracy", help_text="The metric that ranks trials.")
    direction = forms.ChoiceField(choices=[("max", "higher is better"), ("min", "lower is better")], initial="max")
    early_stopping = forms.ChoiceField(
        required=False,
        choices=[
            ("", "None: every trial runs to its end"),
            ("median", "Median: stop a trial worse than the median of completed ones at the same step"),
            ("asha", "ASHA (successive halving)"),
            ("hyperband", "Hyperband"),
        ],
        help_text="Compares the metric the template logs per step.",
    )
    min_steps = forms.IntegerField(
        required=False,
        min_value=1,
        initial=5,
        label="Minimum steps",
        help_text="No trial is stopped early before it logged this step.",
    )
    seed = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=2**63 - 1,
        help_text="Optional: the same seed, space and budget choose the same trials. Empty: a random seed.",
    )

    def early_stopping_spec(self) -> dict[str, Any]:
        """The sweep's `early_stopping` from the two fields ({} for none)."""
        kind = self.cleaned_data.get("early_stopping")
        if not kind:
            return {}
        return {"type": kind, "min_steps": self.cleaned_data.get("min_steps")}

    def __init__(self, *args: Any, projects: list[Any], objective: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """`objective`: the template's ({"metric", "direction"}, see Template.objective): it
        prefills the metric and direction, and the metric's help names it as the one early
        stopping can compare. None or empty: accuracy, higher is better."""
        super().__init__(*args, **kwargs)
        self.fields["project"].choices = [(str(p.pk), p.full_slug) for p in projects]  # type: ignore[attr-defined]
        self.per_step_metric = ""
        if objective and objective.get("metric"):
            self.per_step_metric = str(objective["metric"])
            self.fields["metric"].initial = self.per_step_metric
            self.fields["direction"].initial = objective.get("direction") or "max"
            self.fields["metric"].help_text = (
                f"The metric that ranks trials. The template logs {self.per_step_metric} at every step: "
                "early stopping compares a per-step metric, so keep it unless you sweep without early stopping."
            )

    def metric_warning(self) -> str:
        """After a valid submit: a warning when early stopping compares a metric other than
        the template's per-step objective (it may be logged only at the end, and then no
        trial is ever stopped early); "" otherwise."""
        metric = (self.cleaned_data.get("metric") or "").strip()
        if not self.per_step_metric or not self.cleaned_data.get("early_stopping") or metric == self.per_step_metric:
            return ""
        return (
            f"Early stopping compares {metric or 'no metric'}, but the template logs {self.per_step_metric} "
            f"at every step: if {metric or 'it'} is logged only at the end, no trial will be stopped early."
        )
