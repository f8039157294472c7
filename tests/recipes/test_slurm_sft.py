"""recipes/slurm/sft.sbatch: a dry run with test_slurm's simulated Slurm commands starts one torchrun per node over
the allocation, rendezvous on the first node, on verl's SFT trainer with the recipe and the overrides."""

import subprocess

from test_slurm import SLURM, fake_slurm, steps  # noqa: F401  (fake_slurm: the simulated Slurm commands fixture)


def test_sft_dry_run_starts_torchrun_on_every_node(fake_slurm):  # noqa: F811
    env, calls, tmp = fake_slurm
    env["AM_RL_SFT_RECIPE"] = "sft_7b_1node"
    env["SLURM_SUBMIT_DIR"] = "/repo"
    result = subprocess.run(["bash", str(SLURM / "sft.sbatch"), "data.train_files=d.parquet"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    sft = steps(calls)["sft"]
    assert sft[: sft.index("python")] == ["--nodes=4", "--ntasks-per-node=1", "--cpus-per-task=64", "--gres=gpu:8",
                                          "--kill-on-bad-exit=1",
                                          f"--output={tmp}/logs/sft.log", f"--error={tmp}/logs/sft.log"]  # fmt: skip
    torchrun = sft[sft.index("python") + 1 :]
    assert torchrun[:2] == ["-m", "torch.distributed.run"]
    assert "--nnodes=4" in torchrun and "--nproc-per-node=8" in torchrun
    assert "--rdzv-endpoint=10.0.0.1:29500" in torchrun and "--rdzv-id=am_rl-sft-77" in torchrun
    trainer = torchrun[torchrun.index("verl.trainer.sft_trainer") + 1 :]
    assert trainer == ["--config-path=/repo/recipes", "--config-name=sft_7b_1node", "trainer.nnodes=4",
                       "trainer.n_gpus_per_node=8", "data.train_files=d.parquet"]  # fmt: skip
