"""How a process ended, in the portal's words, for pages and backends alike: an exit code
as "exit code 2", a signal by name ("cancelled (SIGTERM)", "ended by SIGKILL"), never
"exit code -15". Plain functions: the template filter of the same name
(apps.core.templatetags.wording) and the compute backends both call these.
"""

from __future__ import annotations

import signal


def signal_name(number: int) -> str:
    """SIGTERM for 15; "signal <number>" where the platform has no such signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_status(code: int | None, status: str = "") -> str:
    """How a process ended: "exit code 2", or for a negative code (the process was ended
    by a signal) the signal by name: "cancelled (SIGTERM)" when `status` is "cancelled",
    "ended by SIGKILL" otherwise. "" for no code (None: the process has not ended, or left
    no exit status)."""
    if code is None:
        return ""
    if code >= 0:
        return f"exit code {code}"
    name = signal_name(-code)
    if status == "cancelled":
        return f"cancelled ({name})"
    return f"ended by {name}"
