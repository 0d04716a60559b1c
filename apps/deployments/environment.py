"""Which environment a revision serves in, and whether that environment meets the model's
own requirements — the part of a revision's pre-flight that runs before its model server
is started (so before any traffic), on every serving backend.

- The environment: the deployment's own `environment` when set, else the one the served
  version's training run recorded (its `plinth.environment` MLflow tag), else the
  project's default, else the platform default; then the life-cycle rules
  (apps.environments.selection: building, failed and retired ones are refused).
- The requirements: the `requirements.txt` MLflow logs next to the model's MLmodel file
  (with `conda.yaml`'s pip section as fallback), compared with the packages the
  environment's interpreter has (apps.environments.packages.check). Every missing or
  conflicting package is named.

The MLflow reads go through Plinth's gateway (its timeouts; MlflowUnavailable when MLflow
cannot be reached) — never the MLflow client library, which retries for minutes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from apps.deployments.examples import model_file
from apps.environments import packages, runtime, selection
from apps.environments.models import Environment
from apps.registry.mlflow import MlflowError, registry

if TYPE_CHECKING:
    from apps.deployments.models import Deployment, Revision

ENVIRONMENT_TAG = "plinth.environment"  # the run tag a launch writes: the environment's label
REQUIREMENTS_FILE = "requirements.txt"
CONDA_FILE = "conda.yaml"
MAX_REQUIREMENTS_BYTES = 1_000_000


def recorded_label(run_id: str) -> str:
    """The `plinth.environment` tag of MLflow run `run_id` ("" when the run id is empty,
    the run is gone or has no such tag). Raises MlflowUnavailable when MLflow cannot be
    reached."""
    if not run_id:
        return ""
    try:
        run = registry().get_run(run_id)
    except MlflowError:  # no such run (deleted, or a version made outside a run)
        return ""
    tags = (run.get("data") or {}).get("tags") or []
    return next((str(tag.get("value") or "") for tag in tags if tag.get("key") == ENVIRONMENT_TAG), "")


def resolve(deployment: Deployment, revision: Revision) -> selection.Selected:
    """The environment `revision` serves in (see the module docstring), with the warnings
    to show (a deprecated one). The recorded environment is looked up only when the
    deployment sets none. Raises Conflict (building, retired, none at all) or InvalidInput
    (failed) from the life-cycle rules, MlflowUnavailable when the run's tag cannot be
    read."""
    requested = _environment(deployment.environment_id)
    recorded = None
    if requested is None:
        run_id = revision.run_id or _source_run(deployment.model_name, revision.version)
        recorded = selection.recorded_by_label(recorded_label(run_id))
        if recorded is not None and recorded.team_id not in (None, deployment.project.team_id):
            # The tag is the job's to write: another team's environment never serves here.
            recorded = None
    return selection.for_deployment(deployment.project, recorded, requested=requested)


def _source_run(model_name: str, version: int) -> str:
    """The version's source run id ("" when the version or its run is unknown). Raises
    MlflowUnavailable: a revision whose run id could not be read when it was made must not
    fall back to the project's environment only because MLflow was down."""
    try:
        found = registry().get_model_version(model_name, version)
    except MlflowError:
        return ""
    return str((found or {}).get("run_id") or "")


def model_requirements(model_name: str, version: int) -> list[str] | None:
    """The requirement lines (PEP 508) MLflow logged with `version` of `model_name`:
    its `requirements.txt`, else the pip section of its `conda.yaml`; None when the
    version logged neither (nothing to check). Raises MlflowUnavailable when MLflow cannot
    be reached."""
    text = model_file(model_name, version, REQUIREMENTS_FILE, MAX_REQUIREMENTS_BYTES)
    if text is not None:
        return packages.requirement_lines(text.decode("utf-8", "replace"))
    conda = model_file(model_name, version, CONDA_FILE, MAX_REQUIREMENTS_BYTES)
    if conda is None:
        return None
    return conda_pip_requirements(conda.decode("utf-8", "replace"))


def conda_pip_requirements(text: str) -> list[str]:
    """The pip requirement lines of a conda environment file (`dependencies: [..., {pip:
    [...]}]`); [] when it has none or is not YAML."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    if not isinstance(data, dict):
        return []
    found: list[str] = []
    for item in data.get("dependencies") or []:
        if isinstance(item, dict):
            found.extend(str(line) for line in item.get("pip") or [])
    return packages.requirement_lines("\n".join(found))


def unmet_requirements(
    environment: Environment, requirements: list[str] | None, *, backend: str = "local"
) -> list[packages.Problem]:
    """The model's requirements that `environment` does not meet (every one, in the
    model's order). An image-only environment on the kubernetes backend is not checked
    (the image's packages are not known to Plinth): []."""
    if not requirements:
        return []
    if backend == "kubernetes" and environment.image and environment.build_id is None and not environment.is_portal:
        return []
    return packages.check(requirements, runtime.installed_packages(environment))


def unmet_sentence(environment: Environment, problems: list[packages.Problem]) -> str:
    """One sentence naming every problem, e.g. "The environment portal:1 does not meet
    the model's requirements: cowsay (==6.1) is not installed; numpy 1.26.4 is installed,
    the model needs ==2.3.1." """
    listed = "; ".join(str(problem) for problem in problems)
    return f"The environment {environment.label} does not meet the model's requirements: {listed}."


def _environment(pk: int | None) -> Environment | None:
    if pk is None:
        return None
    return Environment.objects.select_related("build", "team", "replaced_by").filter(pk=pk).first()
