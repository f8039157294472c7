"""The task runner verl's ``run_ppo`` starts: it is constructed as a Ray actor and runs verl's own ``run`` (the
subclass of verl's ``@ray.remote`` class could not even be constructed), and it says which node cannot import am_rl."""

import pytest
import ray

from am_rl.config.load import compose
from am_rl.trainer.preflight import check_nodes_import_am_rl
from am_rl.trainer.task_runner import AMTaskRunner


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_constructed_as_a_ray_actor_and_runs_verls_run(local_ray, tmp_path):
    runner = AMTaskRunner.remote()
    ray.get(runner.__ray_ready__.remote())
    # verl's run gets as far as loading the training data, which is missing here: its error, not a constructor's.
    cfg = compose("demo_cpu", [f"data.train_files={tmp_path / 'missing.parquet'}", f"data.val_files={tmp_path / 'v.parquet'}",
                               "actor_rollout_ref.model.path=/nonexistent/model", "am_rl.balancer.url=http://127.0.0.1:9"])  # fmt: skip
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(runner.run.remote(cfg), timeout=300)
    assert "super(type, obj)" not in str(info.value)
    assert "/nonexistent/model" in str(info.value) or "missing.parquet" in str(info.value)


def test_every_node_imports_am_rl_and_a_node_that_cannot_says_so(local_ray):
    check_nodes_import_am_rl()
    with pytest.raises(RuntimeError, match=r"Ray node .* cannot import am_rl_not_installed.*Install am_rl"):
        check_nodes_import_am_rl("am_rl_not_installed")
