"""How parameters reach a job: as arguments and environment variables, never through a
shell. A value like `; rm -rf /` stays one argument, exactly as typed."""

from __future__ import annotations

import re
from typing import Any

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_argv(command: list[str], parameters: dict[str, Any]) -> list[str]:
    """Substitute `{name}` placeholders inside each argument (the result stays one
    argument). Parameters that no argument mentions are appended as `--name=value`."""
    used: set[str] = set()

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            return match.group(0)
        used.add(name)
        return render_value(parameters[name])

    argv = [_PLACEHOLDER.sub(substitute, arg) for arg in command]
    argv += [f"--{name}={render_value(value)}" for name, value in parameters.items() if name not in used]
    return argv


def env_name(parameter: str) -> str:
    return "PLINTH_PARAM_" + re.sub(r"[^A-Za-z0-9]", "_", parameter).upper()


def build_env(parameters: dict[str, Any]) -> dict[str, str]:
    return {env_name(name): render_value(value) for name, value in parameters.items()}
