"""The request body a deployment's pre-flight and "try it" panel send to a revision: the
deployment's own `input_example` when it has one, else the input example MLflow logged with
the model version (`serving_input_example.json`, written when the model was logged with an
input example), in MLflow's scoring protocol."""

from __future__ import annotations

import json
from typing import Any

from apps.core.errors import Conflict
from apps.deployments.models import Deployment
from apps.registry.mlflow import MlflowUnavailable, registry

# MLflow's file name for a logged model's scoring-protocol example (mlflow.models.utils).
SERVING_INPUT_FILE = "serving_input_example.json"
# An example larger than this is not an example: refused rather than read into memory.
MAX_EXAMPLE_BYTES = 1_000_000
NO_EXAMPLE = "no input example: give one on the deployment"


class NoInputExample(Conflict):
    """Neither the deployment nor the model version has an input example (a 409: give one
    on the deployment)."""

    default_message = NO_EXAMPLE


def input_example(deployment: Deployment, version: int) -> bytes:
    """The JSON body (UTF-8 bytes) to send to `version` of the deployment's model.

    `deployment.input_example` wins when set (serialised as given); otherwise the version's
    `serving_input_example.json` artifact is read from MLflow. Raises NoInputExample when
    there is neither (or the artifact is not JSON, or over 1 MB), MlflowUnavailable (503)
    when MLflow cannot be reached (the caller retries later)."""
    if deployment.input_example is not None:
        return json.dumps(deployment.input_example).encode()
    found = _logged_example(deployment.model_name, version)
    if found is None:
        raise NoInputExample()
    try:
        json.loads(found)
    except ValueError:
        raise NoInputExample(f"{NO_EXAMPLE} (the model's {SERVING_INPUT_FILE} is not JSON)") from None
    return found


def _logged_example(model_name: str, version: int) -> bytes | None:
    """The bytes of the version's serving_input_example.json, or None when it has none."""
    found = model_file(model_name, version, SERVING_INPUT_FILE, MAX_EXAMPLE_BYTES)
    if found is not None and len(found) > MAX_EXAMPLE_BYTES:
        raise NoInputExample(f"{NO_EXAMPLE} (the model's {SERVING_INPUT_FILE} is over 1 MB)")
    return found


def model_file(model_name: str, version: int, name: str, limit: int) -> bytes | None:
    """The bytes of file `name` of the model folder MLflow logged for `version` of
    `model_name` (next to its MLmodel: serving_input_example.json, requirements.txt,
    conda.yaml …), at most `limit` + 1 bytes (more than `limit` means the file is larger);
    None when the version, or the file, does not exist. Raises MlflowUnavailable when
    MLflow cannot be reached."""
    gateway = registry()
    found = gateway.get_model_version(model_name, version)
    if found is None:
        return None
    model_id = _logged_model_id(found)
    if model_id:  # MLflow 3: the model is a logged model with its own artifact location
        body = _read(
            gateway,
            f"{gateway.base_url}/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files",
            {"artifact_file_path": name},
            limit,
        )
        if body is not None:
            return body
    run_id, folder = _run_folder(found)
    if not run_id:
        return None
    path = f"{folder}/{name}" if folder else name
    return _read(gateway, f"{gateway.base_url}/get-artifact", {"run_uuid": run_id, "path": path}, limit)


def _logged_model_id(version: dict[str, Any]) -> str:
    """The id of the logged model behind a version (MLflow 3: `model_id`, or a source of
    the form `models:/m-<id>`); "" for a version made from a run's artifacts."""
    if version.get("model_id"):
        return str(version["model_id"])
    source = str(version.get("source") or "")
    tail = source.removeprefix("models:/")
    return tail if source.startswith("models:/m-") and "/" not in tail else ""


def _run_folder(version: dict[str, Any]) -> tuple[str, str]:
    """(run id, folder of the model inside the run's artifacts) for a version whose source
    is `runs:/<run>/<folder>` or a path under the run's artifact root; ("", "") otherwise."""
    source = str(version.get("source") or "")
    run_id = str(version.get("run_id") or "")
    if source.startswith("runs:/"):
        run, _, folder = source.removeprefix("runs:/").partition("/")
        return run, folder.strip("/")
    if run_id and f"/{run_id}/artifacts/" in source:
        return run_id, source.split(f"/{run_id}/artifacts/", 1)[1].strip("/")
    return "", ""


def _read(gateway: Any, url: str, params: dict[str, str], limit: int) -> bytes | None:
    """GET one artifact file through the gateway's session and timeouts, at most `limit`
    + 1 bytes; None when MLflow has no such file. MlflowUnavailable propagates."""
    response = gateway._send("GET", url, params=params, stream=True, timeout=(gateway.timeout, gateway.history_timeout))
    try:
        if response.status_code >= 500:
            raise MlflowUnavailable(f"MLflow at {gateway.base_url} answered {response.status_code}.")
        if response.status_code >= 400:
            return None
        body = response.raw.read(limit + 1, decode_content=True)
    finally:
        response.close()
    return bytes(body)
