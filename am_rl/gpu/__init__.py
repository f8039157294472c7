"""The GPU cluster shape (DESIGN.md §5): verl's Ray trainer, wired to am_rl through verl's public hooks only.

- ``task_runner``: verl's ``run_ppo(config, task_runner_class=...)`` hook; registers ``am_grpo`` where verl
  computes advantages.
- ``agent_loop``: ``actor_rollout_ref.rollout.agent.agent_loop_manager_class``: shuffle before dispatch, restore
  after, and every sample sent to the load balancer (``server_client``).
- ``checkpoint_manager``: ``actor_rollout_ref.rollout.checkpoint_manager_class``: registers verl's vLLM replicas
  with the balancer and pauses routing to them while they sleep or take new weights.
- ``plan`` and ``run``: the placement plan (the dry run) and the launch.
"""
