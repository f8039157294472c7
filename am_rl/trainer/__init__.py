"""The one trainer: verl's Ray trainer (``RayPPOTrainer.fit`` via ``run_ppo``) wired to am_rl through verl's public
hooks, on a GPU cluster and on a CPU box alike (DESIGN.md §5). Data flows trainer → agent loop → balancer → engines.

- ``run``: the launch (services, then ``run_ppo`` with our task runner); ``services``: balancer, reward service, vLLM
  servers, each started on demand and always stopped; ``preflight``: machine checks before anything starts.
- ``task_runner``: verl's ``run_ppo(config, task_runner_class=...)`` hook; registers ``am_grpo`` where verl computes
  advantages.
- ``verl_plugins``: what every Ray process registers in verl (``VERL_USE_EXTERNAL_MODULES``): the ``cpu`` platform
  (``platform_cpu``) and ``rollout.name=am_external`` (``external_engines``: vLLM servers outside the trainer as
  verl rollout replicas, weights pushed through vLLM's RL API).
- ``agent_loop``: ``rollout.agent.agent_loop_manager_class``: shuffle before dispatch, restore after, every sample
  sent to the load balancer (``server_client``).
- ``checkpoint_manager``: ``rollout.checkpoint_manager_class``: registers the engines with the balancer and pauses
  routing to them while they sleep or take new weights (``balancer_control``).
- ``plan``: the placement plan and the dry run.
"""
