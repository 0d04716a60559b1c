"""The one small interface every compute backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from apps.core.errors import Conflict, Unavailable

if TYPE_CHECKING:
    from apps.launches.models import Launch


class BackendUnavailable(Unavailable):
    """The backend cannot be reached right now (retry later; 503 to API callers)."""

    default_message = "The compute backend is unreachable; try again in a moment."


class BackendRejected(Conflict):
    """The backend understood the request and refused it for good (fail the launch)."""


class BackendDisabled(BackendRejected):
    """The backend is switched off on this installation (e.g. `local` in production
    without PLINTH_LOCAL_BACKEND_ENABLED): new launches on it are refused with a 409."""


@dataclass(frozen=True)
class Observation:
    """What a backend sees of one launch.

    state: pending | running | succeeded | failed | cancelled | missing
    ("missing": the backend has no trace of it: never submitted, or deleted)."""

    state: str
    reason: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class GpuDevice:
    node: str
    index: int
    uuid: str = ""
    model: str = ""
    memory_total_mib: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def submit(self, launch: Launch) -> None:
        """Start the launch under its deterministic name (`launch.job_name`). Idempotent:
        "already exists" counts as success. Raises BackendUnavailable / BackendRejected."""

    def poll(self, launches: Sequence[Launch]) -> dict[int, Observation]:
        """The state of many launches at once: one list call per namespace, not one per launch."""

    def logs(self, launch: Launch, tail: int = 200) -> str:
        """The last `tail` lines of the launch's output ("" when there is none yet)."""

    def cancel(self, launch: Launch) -> None:
        """Stop the launch. Idempotent: cancelling something already gone is fine."""

    def inventory(self) -> list[GpuDevice]:
        """The GPUs this backend can hand out."""
