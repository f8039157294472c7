"""verl's task runner with am_rl's registrations: the ``task_runner_class`` of ``verl.trainer.main_ppo.run_ppo``.

verl runs the whole training driver (advantages included) inside this Ray actor, on whichever node Ray places it.
Registries are per process, so the things verl looks up by name there are registered here: ``am_grpo`` in verl's
advantage-estimator registry, the ``am_remote`` reward managers. The agent-loop manager, checkpoint manager and
reward manager are named by import path in the config, so verl's other processes load them on their own.

This subclasses verl's DataProto trainer's runner (``main_ppo_v0.TaskRunner``), whose loop dispatches the batch
through ``agent_loop_manager_class`` where the shuffle lives (verl 0.9's TransferQueue trainer, ``trainer.use_v1``,
dispatches per prompt group through its replay buffer instead, and has no such batch to shuffle).
"""

from __future__ import annotations

import os

import ray
from verl.trainer.main_ppo_v0 import TaskRunner

from am_rl.gpu.checkpoint_manager import BALANCER_URL_ENV, CONTROL_TIMEOUT_ENV


class AMTaskRunnerImpl(TaskRunner.__ray_actor_class__):
    def run(self, config) -> None:
        import am_rl.algos.am_grpo  # noqa: F401  (registers am_grpo where verl computes advantages)
        import am_rl.rewards  # noqa: F401  (registers the am_remote reward managers)

        os.environ[BALANCER_URL_ENV] = config.am_rl.balancer.url
        os.environ[CONTROL_TIMEOUT_ENV] = str(config.am_rl.balancer.control_timeout_s)
        super().run(config)


AMTaskRunner = ray.remote(AMTaskRunnerImpl)
