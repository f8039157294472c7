"""The CPU platform as verl's workers see it: loaded in a Ray actor through verl's external-modules hook, it gives
torch every core the actor may run on (Ray's default for an actor that asks for no CPUs is one OpenMP thread) and
verl's engine registry am_rl's FSDP engine for device cpu."""

import os

import ray

from am_rl.trainer.platform_cpu import host_threads

PLUGINS = {"VERL_USE_EXTERNAL_MODULES": "am_rl.trainer.verl_plugins"}


@ray.remote(num_gpus=1)  # placed the way verl places its workers: by (logical) GPUs only
class Worker:
    def threads(self) -> tuple[int, str]:
        import torch
        import verl  # noqa: F401  (imports the plugins named in VERL_USE_EXTERNAL_MODULES)

        return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "")

    def engine(self) -> str:
        from verl.workers.engine.base import EngineRegistry

        return EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__


def test_trainer_workers_use_every_core_on_the_cpu_platform():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        on_cpu = Worker.options(runtime_env={"env_vars": PLUGINS | {"VERL_PLATFORM": "cpu"}}).remote()
        assert ray.get(on_cpu.threads.remote(), timeout=120) == (host_threads(), "1")
        assert ray.get(on_cpu.engine.remote(), timeout=120) == "CPUFSDPEngineWithLMHead"
        ray.kill(on_cpu)
        elsewhere = Worker.options(runtime_env={"env_vars": PLUGINS}).remote()  # another platform: left as Ray set it
        assert ray.get(elsewhere.threads.remote(), timeout=120) == (1, "1")
    finally:
        ray.shutdown()


TORCHRUN_INIT = """
import torch.distributed as dist
import verl  # noqa: F401  (imports the plugins named in VERL_USE_EXTERNAL_MODULES)
from verl.utils.distributed import initialize_global_process_group
print(initialize_global_process_group(), dist.get_backend())
"""


def test_torchrun_process_group_is_plain_gloo_on_the_cpu_platform():
    # verl's SFT trainer under torchrun: verl's own setup asks torch for "cpu:gloo,cpu:gloo", which torch refuses.
    import subprocess
    import sys

    from am_rl.ports import PortReservation

    with PortReservation() as master:
        env = {**os.environ, **PLUGINS, "VERL_PLATFORM": "cpu", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master.port)}  # fmt: skip
        done = subprocess.run([sys.executable, "-c", TORCHRUN_INIT], env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "(0, 0, 1) gloo"
    without = {k: v for k, v in env.items() if k != "VERL_PLATFORM"}
    done = subprocess.run([sys.executable, "-c", TORCHRUN_INIT], env=without, capture_output=True, text=True)
    assert done.returncode != 0 and "NCCL" in done.stderr  # without the platform verl falls back to nvidia
