"""The one door to MLflow. Every call has a timeout and maps failures to two errors:
`MlflowUnavailable` (connection refused, timeout, 5xx: show a banner, answer 503, retry
later) and `MlflowError` (MLflow understood and refused: a 4xx with its message)."""

from __future__ import annotations

import time
from typing import Any

import requests
from django.conf import settings

from apps.core.deadline import cap_timeout
from apps.core.errors import ServiceError, Unavailable


class MlflowUnavailable(Unavailable):
    default_message = "MLflow is unreachable; try again in a moment."


class MlflowError(ServiceError):
    status_code = 400

    def __init__(self, message: str, *, error_code: str = "", http_status: int = 400) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.http_status = http_status


# What MLflow's get-history-bulk answers at most per call (its MAX_HISTORY_RESULTS).
HISTORY_BULK_LIMIT = 25_000


class MlflowGateway:
    def __init__(self, base_url: str | None = None, timeout: float | None = None) -> None:
        self.base_url = (base_url or settings.MLFLOW_TRACKING_URI).rstrip("/")
        self.timeout = timeout if timeout is not None else settings.MLFLOW_TIMEOUT
        # Reading 25,000 points takes MLflow about a second, several when it is busy: a
        # longer read timeout for history and artifact reads, the usual one to connect.
        self.history_timeout = max(self.timeout, float(settings.PLINTH_MLFLOW_HISTORY_TIMEOUT))
        self.session = requests.Session()
        if settings.MLFLOW_TRACKING_USERNAME:
            self.session.auth = (settings.MLFLOW_TRACKING_USERNAME, settings.MLFLOW_TRACKING_PASSWORD)

    # -- plumbing ----------------------------------------------------------------------
    def _send(
        self, method: str, url: str, *, timeout: Any = None, retries: int = 0, **kwargs: Any
    ) -> requests.Response:
        """`retries`: for reads only, how often a timeout or a dropped connection is tried
        again (a busy MLflow answering one slow history read should not fail a compare)."""
        for attempt in range(retries + 1):
            try:
                # Within a web request, never past its budget (apps.core.deadline).
                return self.session.request(method, url, timeout=cap_timeout(timeout or self.timeout), **kwargs)
            except (requests.Timeout, requests.ConnectionError) as exc:
                if attempt < retries:
                    continue
                raise MlflowUnavailable(f"MLflow at {self.base_url} is unreachable ({type(exc).__name__}).") from exc
            except requests.RequestException as exc:
                raise MlflowUnavailable(f"MLflow at {self.base_url} is unreachable ({type(exc).__name__}).") from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    def _call(self, method: str, path: str, *, api: str = "api", timeout: Any = None, **kwargs: Any) -> dict[str, Any]:
        """One REST call; `api="ajax-api"` reaches the endpoints MLflow's own UI uses."""
        response = self._send(method, f"{self.base_url}/{api}/2.0/mlflow/{path}", timeout=timeout, **kwargs)
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

    def get_experiment(self, experiment_id: str) -> dict[str, Any] | None:
        """The experiment with this id ({experiment_id, name, lifecycle_stage, tags, ...}),
        or None when MLflow has none."""
        try:
            body = self._call("GET", "experiments/get", params={"experiment_id": experiment_id})
        except MlflowError as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or exc.http_status == 404:
                return None
            raise
        experiment: dict[str, Any] = body["experiment"]
        return experiment

    def search_experiments(self, page_token: str = "", max_results: int = 1000) -> tuple[list[dict[str, Any]], str]:
        """One page of every experiment (active and deleted) and the next page token ("" at
        the end)."""
        payload: dict[str, Any] = {"max_results": max_results, "view_type": "ALL"}
        if page_token:
            payload["page_token"] = page_token
        body = self._call("POST", "experiments/search", json=payload)
        return body.get("experiments", []), body.get("next_page_token", "")

    def create_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        payload: dict[str, Any] = {"name": name}
        if tags:
            payload["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        return str(self._call("POST", "experiments/create", json=payload)["experiment_id"])

    def restore_experiment(self, experiment_id: str) -> None:
        """Restore a deleted experiment (MLflow's experiments/restore); MlflowError when
        MLflow refuses (e.g. it was permanently deleted)."""
        self._call("POST", "experiments/restore", json={"experiment_id": experiment_id})

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

    def reopen_run(self, run_id: str) -> None:
        """Set an ended run back to RUNNING (MLflow's runs/update with status RUNNING), as
        for a sweep that is extended after it ended. MLflow keeps the old end time (its
        runs/update can set one, not clear it): `end_run` sets a new one when the run ends
        again. MlflowError 404 (RESOURCE_DOES_NOT_EXIST) for an unknown run, 400
        (INVALID_PARAMETER_VALUE) for a deleted one."""
        self._call("POST", "runs/update", json={"run_id": run_id, "status": "RUNNING"})

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
        run_view_type: str = "ACTIVE_ONLY",
    ) -> tuple[list[dict[str, Any]], str]:
        """One page of runs (MLflow's filter syntax) and the next page token ("" at the end).
        `run_view_type`: ACTIVE_ONLY, DELETED_ONLY or ALL. A bad filter or order_by is an
        MlflowError with MLflow's message (400)."""
        payload: dict[str, Any] = {
            "experiment_ids": experiment_ids,
            "filter": filter_string,
            "max_results": max_results,
            "order_by": order_by or [],
            "run_view_type": run_view_type,
        }
        if page_token:
            payload["page_token"] = page_token
        body = self._call("POST", "runs/search", json=payload)
        return body.get("runs", []), body.get("next_page_token", "")

    # -- metric histories ----------------------------------------------------------------
    def get_history_bulk(
        self, run_ids: list[str], key: str, max_results: int = HISTORY_BULK_LIMIT
    ) -> list[dict[str, Any]]:
        """Every logged point of metric `key` of up to 100 runs in one call, at most
        `max_results` (25,000) points in all, ordered by run id, then timestamp and step:
        when the answer is full, its last run may be cut short. This is the endpoint behind
        MLflow's own charts (one SQL query for all the runs), much cheaper per point than
        `metrics/get-history`. Points are dicts: run_id, key, step, timestamp, value (NaN
        comes back as float('nan'))."""
        body = self._call(
            "GET",
            "metrics/get-history-bulk",
            api="ajax-api",
            timeout=(self.timeout, self.history_timeout),
            retries=1,
            params={"run_id": run_ids, "metric_key": key, "max_results": max_results},
        )
        metrics: list[dict[str, Any]] = body.get("metrics", [])
        return metrics

    def get_metric_history(
        self, run_id: str, key: str, max_results: int = HISTORY_BULK_LIMIT, page_token: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        """One page of one run's history of `key` and the next page token ("" at the end)."""
        params: dict[str, Any] = {"run_id": run_id, "metric_key": key, "max_results": max_results}
        if page_token:
            params["page_token"] = page_token
        body = self._call(
            "GET", "metrics/get-history", timeout=(self.timeout, self.history_timeout), retries=1, params=params
        )
        return body.get("metrics", []), body.get("next_page_token", "")

    def get_history_bulk_interval(self, run_ids: list[str], key: str, max_results: int = 320) -> list[dict[str, Any]]:
        """MLflow's UI sampling: up to `max_results` points a run (first and last kept,
        evenly spaced between, no extremes) for up to 100 runs."""
        body = self._call(
            "GET",
            "metrics/get-history-bulk-interval",
            api="ajax-api",
            timeout=(self.timeout, self.history_timeout),
            params={"run_ids": run_ids, "metric_key": key, "max_results": max_results},
        )
        metrics: list[dict[str, Any]] = body.get("metrics", [])
        return metrics

    # -- artifacts -----------------------------------------------------------------------
    def list_artifacts(self, run_id: str, path: str = "") -> list[dict[str, Any]]:
        """The files and folders directly under `path` ("" = the run's artifact root):
        [{path, is_dir, file_size}]. A missing folder is an empty list."""
        params = {"run_id": run_id, **({"path": path} if path else {})}
        files: list[dict[str, Any]] = self._call("GET", "artifacts/list", params=params).get("files", [])
        return files

    def open_artifact(self, run_id: str, path: str) -> requests.Response:
        """A streamed download of one artifact file (the caller closes it). MlflowError 404
        when there is no such file (or `path` is a folder)."""
        response = self._send(
            "GET",
            f"{self.base_url}/get-artifact",
            params={"run_uuid": run_id, "path": path},
            stream=True,
            timeout=(self.timeout, self.history_timeout),
        )
        if response.status_code >= 500:
            response.close()
            raise MlflowUnavailable(f"MLflow at {self.base_url} answered {response.status_code}.")
        if response.status_code >= 400:
            response.close()
            raise MlflowError("No such artifact.", error_code="RESOURCE_DOES_NOT_EXIST", http_status=404)
        return response

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{settings.MLFLOW_UI_URL.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def experiment_url(self, experiment_id: str) -> str:
        """The experiment's runs tab: MLflow 3's bare experiment route opens its GenAI
        overview, which is not where a training experiment's runs are."""
        return f"{settings.MLFLOW_UI_URL.rstrip('/')}/#/experiments/{experiment_id}/runs"


def gateway() -> MlflowGateway:
    return MlflowGateway()
