"""`python -m apps.gpus.nvml_probe`: what NVML reports on this host, as JSON on stdout.

The same reading code the sampler uses (apps.gpus.sources.nvml), without Django: count,
names, UUIDs, memory, utilization and power of every device, the driver version, and why
there is nothing when there is nothing (no pynvml, no driver). Always exits 0: "no GPU" is
an answer, not a failure."""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any, TextIO

from apps.gpus.sources.base import SourceError
from apps.gpus.sources.nvml import NvmlSource, load_pynvml


def probe(nvml: Any = None) -> dict[str, Any]:
    """The report as a dict (`nvml`: pynvml, or a fake)."""
    module = nvml if nvml is not None else load_pynvml()
    report: dict[str, Any] = {
        "host": socket.gethostname(),
        "pynvml": module is not None,
        "available": False,
        "driver_version": "",
        "count": 0,
        "gpus": [],
        "error": "",
    }
    if module is None:
        report["error"] = "pynvml is not installed (pip install nvidia-ml-py)"
        return report
    try:
        module.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        report["error"] = f"NVML did not start: {type(exc).__name__}: {exc}"
        return report
    try:
        module.nvmlShutdown()
    except Exception as exc:  # reported, the reading below opens NVML again
        report["error"] = f"nvmlShutdown: {exc}"
    source = NvmlSource(module)
    started = time.perf_counter()
    try:
        devices = source.devices()
    except SourceError as exc:
        report["error"] = str(exc)
        return report
    report.update(
        available=True,
        driver_version=source.driver_version,
        count=len(devices),
        gpus=[device.as_dict() for device in devices],
        read_seconds=round(time.perf_counter() - started, 4),
    )
    return report


def main(out: TextIO = sys.stdout, nvml: Any = None) -> int:
    json.dump(probe(nvml), out, indent=2)
    out.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
