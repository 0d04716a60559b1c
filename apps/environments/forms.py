"""Forms of the environment pages. They only parse input (pod defaults from lines of text);
the services validate and decide (names, image references, requirement syntax, who may)."""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms

from apps.environments.models import Environment

TEXT = {"rows": 4, "spellcheck": "false"}


def _pairs(text: str, what: str) -> dict[str, str]:
    """`KEY=value` lines (blank lines and `#` comments skipped) as a dict."""
    found: dict[str, str] = {}
    for number, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise forms.ValidationError(f"Line {number}: write {what} as KEY=value.")
        found[key.strip()] = value.strip()
    return found


def pairs_text(values: dict[str, Any] | None) -> str:
    return "\n".join(f"{k}={v}" for k, v in (values or {}).items())


class ContentForm(forms.Form):
    """What an environment version holds (the new-version form is this, prefilled)."""

    description = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))
    requirements = forms.CharField(
        required=False,
        max_length=20000,
        widget=forms.Textarea(attrs={**TEXT, "rows": 6, "placeholder": "scikit-learn>=1.7,<1.8"}),
        label="Python requirements (local backend)",
        help_text="One per line, pip syntax, from the package index. Plinth builds them into a virtual "
        "environment of their own; identical lists share one build. Empty: the portal's own interpreter.",
    )
    extends_portal = forms.BooleanField(
        required=False,
        initial=True,
        label="Extends the portal's packages",
        help_text="The build sees the portal's own packages under the listed ones (off: only the listed ones).",
    )
    image = forms.CharField(
        required=False,
        max_length=500,
        label="Image (Kubernetes)",
        help_text="registry/repository[:tag][@sha256:<digest>] — a digest pins the exact content.",
    )
    node_selector = forms.CharField(
        required=False, widget=forms.Textarea(attrs=TEXT), label="Node selector", help_text="One label=value a line."
    )
    tolerations = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs=TEXT),
        label="Tolerations (JSON list)",
        help_text='e.g. [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
    )
    env = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs=TEXT),
        label="Environment variables",
        help_text="One NAME=value a line.",
    )

    def clean_node_selector(self) -> dict[str, str]:
        return _pairs(self.cleaned_data.get("node_selector", ""), "labels")

    def clean_env(self) -> dict[str, str]:
        return _pairs(self.cleaned_data.get("env", ""), "variables")

    def clean_tolerations(self) -> Any:
        text = (self.cleaned_data.get("tolerations") or "").strip()
        if not text:
            return []
        try:
            return json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not JSON: {exc}") from None

    def content(self) -> dict[str, Any]:
        """The service's keyword arguments: description, requirements, extends_portal,
        image, pod_defaults."""
        data = self.cleaned_data
        pods = {
            key: data[key] for key in ("node_selector", "tolerations", "env") if data.get(key) not in (None, {}, [])
        }
        return {
            "description": data["description"],
            "requirements": data["requirements"],
            "extends_portal": data["extends_portal"],
            "image": data["image"],
            "pod_defaults": pods,
        }

    @classmethod
    def initial_from(cls, env: Environment) -> dict[str, Any]:
        pods = env.pod_defaults or {}
        return {
            "description": env.description,
            "requirements": env.requirements,
            "extends_portal": env.extends_portal,
            "image": env.image,
            "node_selector": pairs_text(pods.get("node_selector")),
            "tolerations": json.dumps(pods["tolerations"]) if pods.get("tolerations") else "",
            "env": pairs_text(pods.get("env")),
        }


class EnvironmentCreateForm(ContentForm):
    """A new environment: its scope (platform-wide, or a team the user leads) and name."""

    field_order = ["team", "name"]

    team = forms.ChoiceField(label="Scope")
    name = forms.CharField(max_length=63, help_text="e.g. sklearn-1.7. Version 1 of a new name, else the next version.")

    def __init__(self, *args: Any, teams: list[tuple[str, str]], platform: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = ([("", "Platform-wide (every signed-in user)")] if platform else []) + teams
        cast(forms.ChoiceField, self.fields["team"]).choices = choices
        self.fields["team"].required = not platform


class EnvironmentChangeForm(forms.Form):
    """The actions of an existing version: deprecate, undeprecate, retire (with a
    replacement and a message), or a new description."""

    ACTIONS = [
        ("deprecate", "Deprecate"),
        ("undeprecate", "Undeprecate"),
        ("retire", "Retire"),
        ("describe", "Save the description"),
    ]
    action = forms.ChoiceField(choices=ACTIONS)
    replaced_by = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Replacement")
    redirect = forms.BooleanField(
        required=False, label="Redirect new launches to the replacement", help_text="Otherwise they only warn."
    )
    message = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}), label="Message to its users"
    )
    description = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, replacements: list[Environment] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["replaced_by"]).choices = [("", "— none —")] + [
            (e.pk, e.label) for e in replacements or []
        ]
