"""verl's task runner with am_rl's registrations: the ``task_runner_class`` of ``verl.trainer.main_ppo.run_ppo``.

verl runs the whole training driver (advantages included) inside this Ray actor, on whichever node Ray places it.
Registries are per process, so the things verl looks up by name there are registered here: ``am_grpo`` in verl's
advantage-estimator registry, plus everything in ``am_rl.trainer.verl_plugins``.

The runner is verl's DataProto trainer's (``main_ppo_v0``), whose loop dispatches the batch through
``agent_loop_manager_class`` where the shuffle lives (verl 0.9's TransferQueue trainer, ``trainer.use_v1``,
dispatches per prompt group through its replay buffer instead, and has no such batch to shuffle). It subclasses the
plain ``BaseTaskRunner`` and calls the original ``TaskRunner.run``: subclassing the class behind verl's
``@ray.remote`` breaks the zero-argument ``super()`` in its ``__init__`` once Ray rebuilds the class for an actor.
"""

from __future__ import annotations

import ray
from verl.trainer.main_ppo_v0 import BaseTaskRunner, TaskRunner

_VERL_RUN = TaskRunner.__ray_actor_class__.run


class AMTaskRunnerImpl(BaseTaskRunner):
    def run(self, config) -> None:
        import am_rl.algos.am_grpo  # noqa: F401  (registers am_grpo where verl computes advantages)
        import am_rl.trainer.verl_plugins  # noqa: F401  (also imported by verl itself where the env says so)
        from am_rl.trainer.preflight import check_nodes_import_am_rl

        check_nodes_import_am_rl()
        _VERL_RUN(self, config)


AMTaskRunner = ray.remote(AMTaskRunnerImpl)
