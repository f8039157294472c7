"""Everything am_rl registers in verl's per-process registries, imported in every Ray process.

``VERL_USE_EXTERNAL_MODULES=am_rl.trainer.verl_plugins`` (set by ``am_rl.trainer.run`` for every process of a run)
makes ``import verl`` import this module, so verl's workers, agent loops and task runner all see the same names:
- the ``cpu`` platform (``VERL_PLATFORM=cpu`` selects it), its process-group shim and its FSDP engine;
- ``rollout.name=am_external``: external vLLM engines as verl rollout replicas;
- the ``am_grpo`` advantage estimator, where verl computes advantages (the task runner's process).
"""

from am_rl.trainer import external_engines, platform_cpu

platform_cpu.install()
if platform_cpu.selected():
    from am_rl.trainer import cpu_engine  # imports verl's FSDP engine (peft, tensordict): only where it is used

    cpu_engine.register()
external_engines.register()
