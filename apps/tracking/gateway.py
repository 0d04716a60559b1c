"""The one door to MLflow. Every call has a timeout and maps failures to two errors:
`MlflowUnavailable` (connection refused, timeout, 5xx: show a banner, answer 503, retry
later) and `MlflowError` (MLflow understood and refused: a 4xx with its message)."""

from __future__ import annotations

import time
from typing import Any

import requests
from django.conf import settings

from apps.core.errors import ServiceError, Unavailable


class MlflowUnavailable(Unavailable):
    default_message = "MLflow is unreachable; try again in a moment."


class MlflowError(ServiceError):
    status_code = 400

    def __init__(self, message: str, *, error_code: str = "", http_status: int = 400) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.http_status = http_status


class MlflowGateway:
    def __init__(self, base_url: str | None = None, timeout: float | None = None) -> None:
        self.base_url = (base_url or settings.MLFLOW_TRACKING_URI).rstrip("/")
        self.timeout = timeout if timeout is not None else settings.MLFLOW_TIMEOUT
        self.session = requests.Session()
        if settings.MLFLOW_TRACKING_USERNAME:
            self.session.auth = (settings.MLFLOW_TRACKING_USERNAME, settings.MLFLOW_TRACKING_PASSWORD)

    # -- plumbing ----------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.base_url}/api/2.0/mlflow/{path}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise MlflowUnavailable(f"MLflow at {self.base_url} is unreachable ({type(exc).__name__}).") from exc
        if response.status_code >= 500:
            raise MlflowUnavailable(f"MLflow at {self.base_url} answered {response.status_code}.")
        try:
            body: dict[str, Any] = response.json() if response.content else {}
        except ValueError:
            raise MlflowUnavailable(f"MLflow at {self.base_url} answered something that is not JSON.") from None
        if response.status_code >= 400:
            raise MlflowError(
                body.get("message", f"MLflow refused the request ({response.status_code})."),
                error_code=body.get("error_code", ""),
                http_status=response.status_code,
            )
        return body

    # -- health ------------------------------------------------------------------------
    def ping(self) -> None:
        """Raise MlflowUnavailable unless the tracking server answers."""
        try:
            response = self.session.get(f"{self.base_url}/health", timeout=self.timeout)
        except requests.RequestException as exc:
            raise MlflowUnavailable(f"MLflow at {self.base_url} is unreachable ({type(exc).__name__}).") from exc
        if response.status_code != 200:
            raise MlflowUnavailable(f"MLflow at {self.base_url} answered {response.status_code} on /health.")

    # -- experiments -------------------------------------------------------------------
    def get_experiment_by_name(self, name: str) -> dict[str, Any] | None:
        try:
            body = self._call("GET", "experiments/get-by-name", params={"experiment_name": name})
        except MlflowError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or exc.http_status == 404:
                return None
            raise
        experiment: dict[str, Any] = body["experiment"]
        return experiment

    def create_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        payload: dict[str, Any] = {"name": name}
        if tags:
            payload["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        return str(self._call("POST", "experiments/create", json=payload)["experiment_id"])

    def ensure_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        """The id of the experiment called `name`, created when missing. Safe to repeat: a
        concurrent creation ("already exists") is resolved by reading it back."""
        existing = self.get_experiment_by_name(name)
        if existing is not None:
            if existing.get("lifecycle_stage") == "deleted":
                raise MlflowError(f"The MLflow experiment {name!r} exists but is deleted; restore it in MLflow.")
            return str(existing["experiment_id"])
        try:
            return self.create_experiment(name, tags)
        except MlflowError as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            again = self.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again["experiment_id"])

    # -- runs --------------------------------------------------------------------------
    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str] | None = None) -> str:
        payload: dict[str, Any] = {
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": int(time.time() * 1000),
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        return str(self._call("POST", "runs/create", json=payload)["run"]["info"]["run_id"])

    def end_run(self, run_id: str, status: str) -> None:
        """Set a run's final status (FINISHED, FAILED, KILLED) and end time."""
        self._call(
            "POST", "runs/update", json={"run_id": run_id, "status": status, "end_time": int(time.time() * 1000)}
        )

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._call("POST", "runs/set-tag", json={"run_id": run_id, "key": key, "value": value})

    def log_param(self, run_id: str, key: str, value: str) -> None:
        self._call("POST", "runs/log-parameter", json={"run_id": run_id, "key": key, "value": value})

    def get_run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self._call("GET", "runs/get", params={"run_id": run_id})["run"]
        return run

    def delete_run(self, run_id: str) -> None:
        self._call("POST", "runs/delete", json={"run_id": run_id})

    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        order_by: list[str] | None = None,
        max_results: int = 1000,
        page_token: str = "",
    ) -> tuple[list[dict[str, Any]], str]:
        """One page of runs (MLflow's filter syntax) and the next page token ("" at the end)."""
        payload: dict[str, Any] = {
            "experiment_ids": experiment_ids,
            "filter": filter_string,
            "max_results": max_results,
            "order_by": order_by or [],
        }
        if page_token:
            payload["page_token"] = page_token
        body = self._call("POST", "runs/search", json=payload)
        return body.get("runs", []), body.get("next_page_token", "")

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{settings.MLFLOW_UI_URL.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def experiment_url(self, experiment_id: str) -> str:
        return f"{settings.MLFLOW_UI_URL.rstrip('/')}/#/experiments/{experiment_id}"


def gateway() -> MlflowGateway:
    return MlflowGateway()
