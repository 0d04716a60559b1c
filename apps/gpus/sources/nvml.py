"""GPU figures from NVML on this host (the local backend's GPUs, in the embedded mode).

The NVML library is reached through an object with pynvml's function names (`nvml`): the
pynvml module itself in production, a fake in tests (tests/gpus/fakes.py: FakeNvml), so
the reading code runs the same on a laptop without a driver as on a GPU host. A host without
a driver reports no GPUs: that is the embedded default and not an error."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import asdict, dataclass
from typing import Any

from apps.gpus.sources.base import Reading, SourceError


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class NvmlDevice:
    """Everything NVML says about one device that Plinth shows."""

    index: int
    name: str
    uuid: str
    memory_total_mib: int
    memory_used_mib: int
    memory_free_mib: int
    utilization_gpu: float | None
    utilization_memory: float | None
    power_w: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_pynvml() -> Any:
    """The pynvml module (from nvidia-ml-py), or None when it is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class NvmlSource:
    """Reads every device NVML reports, opening and closing the library each pass (a
    long-lived handle would pin the driver in the worker)."""

    name = "nvml"

    def __init__(self, nvml: Any = None, hostname: str | None = None) -> None:
        self.nvml = nvml if nvml is not None else load_pynvml()
        self.hostname = hostname or socket.gethostname()
        self.driver_version = ""

    def devices(self) -> list[NvmlDevice]:
        """The devices, [] without NVML or a driver. Raises SourceError when NVML starts but
        a device cannot be read (a GPU fallen off the bus: worth a message)."""
        nvml = self.nvml
        if nvml is None:
            return []
        try:
            nvml.nvmlInit()
        except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no GPU here
            return []
        try:
            try:
                self.driver_version = _text(nvml.nvmlSystemGetDriverVersion())
            except Exception:
                self.driver_version = ""
            return [self._device(nvml, index) for index in range(int(nvml.nvmlDeviceGetCount()))]
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"NVML could not read the GPUs: {type(exc).__name__}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):  # already shut down: nothing to release
                nvml.nvmlShutdown()

    @staticmethod
    def _device(nvml: Any, index: int) -> NvmlDevice:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        util_gpu = util_mem = power = None
        # Either may answer NOT_SUPPORTED (some boards, some MIG modes): the figure stays None.
        with contextlib.suppress(Exception):
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            util_gpu, util_mem = float(rates.gpu), float(rates.memory)
        with contextlib.suppress(Exception):
            power = float(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0  # milliwatts
        mib = 2**20
        return NvmlDevice(
            index=index,
            name=_text(nvml.nvmlDeviceGetName(handle)),
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            memory_total_mib=int(memory.total) // mib,
            memory_used_mib=int(memory.used) // mib,
            memory_free_mib=int(memory.free) // mib,
            utilization_gpu=util_gpu,
            utilization_memory=util_mem,
            power_w=power,
        )

    def readings(self, known_nodes: frozenset[str] = frozenset()) -> list[Reading]:
        return [
            Reading(
                node=self.hostname,
                index=device.index,
                uuid=device.uuid,
                product=device.name,
                utilization=device.utilization_gpu,
                memory_used_mib=device.memory_used_mib,
                memory_free_mib=device.memory_free_mib,
                power_w=device.power_w,
            )
            for device in self.devices()
        ]
