"""Registry calls to MLflow (registered models, versions, aliases, tags), on the plumbing of
the tracking gateway: the same timeouts, and the same two errors — `MlflowUnavailable`
(503, retried later) and `MlflowError` (MLflow understood and refused)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from apps.core.numbers import normalise
from apps.registry.models import PROJECT_TAG
from apps.tracking.gateway import MlflowError, MlflowGateway, MlflowUnavailable

__all__ = ["MlflowError", "MlflowUnavailable", "RegistryGateway", "registry", "tags_of"]

PAGE = 200  # MLflow's maximum page for registered-model search is 1000; smaller pages answer faster


def _missing(exc: MlflowError) -> bool:
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST" or exc.http_status == 404


def tags_of(thing: dict[str, Any]) -> dict[str, str]:
    """MLflow's [{key, value}] tag list as a dict."""
    return {tag["key"]: tag.get("value", "") for tag in thing.get("tags", []) or []}


def aliases_of(model: dict[str, Any]) -> dict[str, int]:
    """A registered model's aliases as {alias: version}."""
    return {item["alias"]: int(item["version"]) for item in model.get("aliases", []) or []}


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


class RegistryGateway(MlflowGateway):
    """The tracking gateway plus the model registry's REST calls."""

    # -- registered models -------------------------------------------------------------
    def search_registered_models(self, filter_string: str, page_token: str = "") -> tuple[list[dict[str, Any]], str]:
        params: dict[str, Any] = {"filter": filter_string, "max_results": PAGE}
        if page_token:
            params["page_token"] = page_token
        body = self._call("GET", "registered-models/search", params=params)
        return body.get("registered_models", []), body.get("next_page_token", "")

    def all_registered_models(self, filter_string: str, limit: int = 5000) -> list[dict[str, Any]]:
        """Every model matching `filter_string`, page by page (at most `limit`)."""
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            page, token = self.search_registered_models(filter_string, token)
            found.extend(page)
            if not token or len(found) >= limit:
                return found[:limit]

    def project_models(self, full_slug: str) -> list[dict[str, Any]]:
        """The registered models tagged `plinth.project = <team>/<project>`."""
        return self.all_registered_models(f"tags.`{PROJECT_TAG}` = {_quoted(full_slug)}")

    def plinth_models(self) -> list[dict[str, Any]]:
        """Every registered model that carries a `plinth.project` tag."""
        return self.all_registered_models(f"tags.`{PROJECT_TAG}` LIKE '%'")

    def get_registered_model(self, name: str) -> dict[str, Any] | None:
        try:
            body = self._call("GET", "registered-models/get", params={"name": name})
        except MlflowError as exc:
            if _missing(exc):
                return None
            raise
        model: dict[str, Any] = body["registered_model"]
        return model

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._call("POST", "registered-models/set-tag", json={"name": name, "key": key, "value": value})

    # -- versions ----------------------------------------------------------------------
    def model_versions(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """Every version of the named models, newest first, in as few calls as MLflow allows."""
        names = sorted(set(names))
        if not names:
            return []
        found: list[dict[str, Any]] = []
        token = ""
        filter_string = f"name IN ({', '.join(_quoted(n) for n in names)})"
        while True:
            params: dict[str, Any] = {"filter": filter_string, "max_results": 1000}
            if token:
                params["page_token"] = token
            body = self._call("GET", "model-versions/search", params=params)
            found.extend(body.get("model_versions", []))
            token = body.get("next_page_token", "")
            if not token:
                break
        return sorted(found, key=lambda v: (v["name"], -int(v["version"])))

    def versions_of_runs(self, run_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The model versions registered from these runs (100 run ids a call)."""
        ids = sorted({r for r in run_ids if r})
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 100):
            chunk = ", ".join(_quoted(r) for r in ids[start : start + 100])
            body = self._call(
                "GET", "model-versions/search", params={"filter": f"run_id IN ({chunk})", "max_results": 1000}
            )
            found.extend(body.get("model_versions", []))
        return found

    def get_model_version(self, name: str, version: int | str) -> dict[str, Any] | None:
        try:
            body = self._call("GET", "model-versions/get", params={"name": name, "version": str(version)})
        except MlflowError as exc:
            if _missing(exc):
                return None
            raise
        found: dict[str, Any] = body["model_version"]
        return found

    def set_model_version_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        self._call(
            "POST", "model-versions/set-tag", json={"name": name, "version": str(version), "key": key, "value": value}
        )

    # -- aliases -----------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        """Point `alias` at `version` (idempotent: setting the same version again is a no-op)."""
        self._call("POST", "registered-models/alias", json={"name": name, "alias": alias, "version": str(version)})

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove `alias` (idempotent: MLflow answers 200 for an alias that is not set)."""
        self._call("DELETE", "registered-models/alias", json={"name": name, "alias": alias})

    def get_alias(self, name: str, alias: str) -> int | None:
        """The version `alias` points at, or None when it is not set."""
        try:
            body = self._call("GET", "registered-models/alias", params={"name": name, "alias": alias})
        except MlflowError as exc:
            # MLflow answers 400 INVALID_PARAMETER_VALUE "alias ... not found" for an unset alias.
            if _missing(exc) or "not found" in exc.message.lower():
                return None
            raise
        return int(body["model_version"]["version"])

    # -- the runs behind versions -------------------------------------------------------
    def run_summaries(self, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """{run_id: {run_name, status, experiment_id, metrics: {key: latest value}}} for the
        runs that still exist (a deleted run is simply absent). Metric values are floats with
        NaN kept and MLflow's ±1.797e308 sentinels read as ±inf (apps.core.numbers.normalise);
        a value that is not a number is left out."""
        found: dict[str, dict[str, Any]] = {}
        for run_id in sorted({r for r in run_ids if r}):
            try:
                run = self.get_run(run_id)
            except MlflowError as exc:
                if _missing(exc):
                    continue
                raise
            info, data = run.get("info", {}), run.get("data", {})
            found[run_id] = {
                "run_id": run_id,
                "run_name": info.get("run_name", ""),
                "status": info.get("status", ""),
                "experiment_id": info.get("experiment_id", ""),
                "metrics": _metrics(data.get("metrics", []) or []),
            }
        return found


def _metrics(raw: list[dict[str, Any]]) -> dict[str, float]:
    found: dict[str, float] = {}
    for metric in raw:
        try:
            found[metric["key"]] = normalise(metric.get("value"))
        except (KeyError, TypeError, ValueError):
            continue
    return found


def registry() -> RegistryGateway:
    return RegistryGateway()
