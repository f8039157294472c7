"""verl on a CPU: a ``cpu`` platform for verl's platform registry, and the one process-group shim it needs.

Loaded in every Ray process through ``VERL_USE_EXTERNAL_MODULES=am_rl.trainer.verl_plugins`` and selected by
``VERL_PLATFORM=cpu`` (both set by ``recipes/platform/cpu.yaml``). Without it verl falls back to ``nvidia`` when no
accelerator is found and its first CUDA call fails.

Everything verl asks of the device is answered for the host: one "device" per process, memory calls as no-ops,
collectives on gloo; verl's engine registry gets an FSDP engine for device ``cpu`` (``am_rl.trainer.cpu_engine``).
FSDP2 shards and trains on it (FSDP1 refuses CPU parameters: ``sync_module_states=True`` is
hard-coded in verl's FSDP engine, so the CPU recipe sets ``actor.strategy=fsdp2``).
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

PLATFORM_NAME = "cpu"


def _host_memory() -> tuple[int, int]:
    """(free, total) bytes of host memory: what ``torch.cuda.mem_get_info`` answers for a GPU."""
    pages, free_pages = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_AVPHYS_PAGES")
    page = os.sysconf("SC_PAGE_SIZE")
    return free_pages * page, pages * page


def _noop(*_: Any, **__: Any) -> None:
    return None


def _zero(*_: Any, **__: Any) -> int:
    return 0


@contextmanager
def _null_context(*_: Any, **__: Any):
    yield


# The ``torch.<device>`` namespace verl calls through ``get_torch_device()`` (every attribute it uses, grepped in
# verl 0.9.1). torch.cpu lacks the memory, RNG and IPC calls, so they are answered for the host here.
CPU_DEVICE_MODULE = SimpleNamespace(
    is_available=lambda: True,
    device_count=lambda: 1,
    current_device=lambda: PLATFORM_NAME,
    set_device=_noop,
    get_device_name=lambda *_: "cpu",
    synchronize=_noop,
    empty_cache=_noop,
    ipc_collect=_noop,
    set_per_process_memory_fraction=_noop,
    mem_get_info=lambda *_: _host_memory(),
    memory_allocated=_zero,
    memory_reserved=_zero,
    max_memory_allocated=_zero,
    max_memory_reserved=_zero,
    reset_peak_memory_stats=_noop,
    get_rng_state=lambda *_: torch.get_rng_state(),
    set_rng_state=lambda state, *_: torch.set_rng_state(state),
    manual_seed=torch.manual_seed,
    manual_seed_all=torch.manual_seed,
    Stream=torch.cpu.Stream,
    Event=torch.cpu.Event if hasattr(torch.cpu, "Event") else SimpleNamespace,
    stream=torch.cpu.stream,
    current_stream=torch.cpu.current_stream,
)


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """The host as verl's accelerator. Ray still places workers by logical GPUs (``ray_init.num_gpus``): verl's
    resource pools count only GPUs."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self):
        return CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: a GPU node must not silently train on its CPU. Selected by VERL_PLATFORM=cpu.
        return False

    def current_device(self):
        # verl passes this to ``.to()`` and to FSDP's device mesh; "cpu" is the only device name both accept.
        return PLATFORM_NAME

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"  # logical GPUs: what verl's resource pools and placement groups count

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def _gloo_only(init_fn):
    """verl builds the process-group backend as ``f"cpu:gloo,{device}:{backend}"``; on the CPU platform that is
    ``cpu:gloo,cpu:gloo`` and torch refuses the duplicate device type. verl has no hook for the backend string
    (``verl/utils/distributed.py:initialize_global_process_group_ray``, called from ``workers/engine_workers.py:89``
    with no backend argument), so the function is wrapped to pass plain ``gloo``."""

    @functools.wraps(init_fn)
    def init(timeout_second=None, backend=None):
        return init_fn(timeout_second=timeout_second, backend=backend or "gloo")

    return init


def _gloo_only_torchrun(init_fn):
    """The same duplicate in a torchrun launch (``verl.trainer.sft_trainer``, ``verl/utils/distributed.py:
    initialize_global_process_group``), which takes no backend at all: replaced by one that makes the group on plain
    gloo and returns the ranks as verl's does (its ``set_device`` is a no-op on the CPU platform)."""

    @functools.wraps(init_fn)
    def init(timeout_second=36000):
        import datetime

        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_second))
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    return init


def host_threads() -> int:
    """The cores this process may run on: what torch's intra-op pool should use on the CPU platform."""
    return len(os.sched_getaffinity(0))


def selected() -> bool:
    """Whether this process runs on am_rl's cpu platform (``VERL_PLATFORM=cpu``, set by recipes/platform/cpu.yaml)."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


def install() -> None:
    """On the CPU platform: size torch's thread pool and apply the process-group shim. Runs on import of
    ``am_rl.trainer.verl_plugins``, i.e. inside ``import verl`` and before verl's workers import the function.

    Ray sets ``OMP_NUM_THREADS=1`` in every actor that does not ask for CPUs, and verl's workers ask only for
    (here logical) GPUs, so the trainer's forward and backward would run on one core while the others idle: the
    update took 2.2x the hand-written loop's. The engines and the trainer take turns on the cores (rollout, then
    update), so the trainer's pool gets all of them."""
    if not selected():
        return
    torch.set_num_threads(host_threads())
    import verl.utils.distributed as distributed

    if not getattr(distributed.initialize_global_process_group_ray, "__wrapped__", None):
        distributed.initialize_global_process_group_ray = _gloo_only(distributed.initialize_global_process_group_ray)
    if not getattr(distributed.initialize_global_process_group, "__wrapped__", None):
        distributed.initialize_global_process_group = _gloo_only_torchrun(distributed.initialize_global_process_group)
