"""The SFT recipes on verl's SFT trainer: they compose with verl's config, carry the report's values, and their dry
runs print steps and tokens that follow verl's data loader; the dataset class they name masks and drops as promised."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from am_rl.config.load import RECIPES_DIR
from am_rl.sft.dry_run import compose_sft, main, plan

SFT_RECIPES = sorted(p.stem for p in Path(RECIPES_DIR).glob("sft_*.yaml"))
CLUSTER_SFT_RECIPES = ["sft_32b", "sft_7b_1node"]


def test_there_are_the_cluster_recipes_and_the_cpu_one():
    assert SFT_RECIPES == [*CLUSTER_SFT_RECIPES, "sft_tiny_cpu"]


@pytest.mark.parametrize("name", CLUSTER_SFT_RECIPES)
def test_recipe_has_the_reports_values(name):
    cfg = compose_sft(name)
    assert cfg.optim.lr == 8e-5 and cfg.optim.lr_scheduler_type == "cosine"
    assert cfg.optim.lr_warmup_steps_ratio == 0.05 and cfg.optim.min_lr_ratio == 0.0
    assert cfg.data.train_batch_size == 64 and cfg.data.max_length == 32768 and cfg.trainer.total_epochs == 2
    assert cfg.data.pad_mode == "no_padding" and cfg.data.use_dynamic_bsz and cfg.model.use_remove_padding
    assert cfg.data.truncation == "error"
    assert cfg.data.custom_cls.name == "FinalTurnSFTDataset"


def write_sft(path: Path, tokens: list[int]) -> Path:
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             "extra_info": {"row_id": f"m:{i}", "tokens": t}} for i, t in enumerate(tokens)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("name, dp", [("sft_32b", 8), ("sft_7b_1node", 2)])
def test_dry_run_of_each_recipe(name, dp, tmp_path, capsys):
    # 1,000 samples of 10k tokens and 30 over 32k: steps follow verl's per-rank sampler and batch (both drop_last)
    data = write_sft(tmp_path / "sft.parquet", [10_000] * 1000 + [40_000] * 30)
    assert main(["--config-name", name, f"data.train_files={data}"]) == 0
    out = capsys.readouterr().out
    steps = (1000 // dp) // (64 // dp)
    assert f"GPUs {8 if name.endswith('1node') else 64} (data-parallel {dp})" in out
    assert "samples 1000 (30 over max_length 32768 dropped)" in out
    assert f"steps per epoch {steps}, total steps {2 * steps}, warm-up steps {int(0.05 * 2 * steps)}" in out
    assert "tokens per step 640,000 (mean over the data)" in out

    assert main(["--config-name", name, "--samples", "6400"]) == 0
    out = capsys.readouterr().out
    assert "steps per epoch 100, total steps 200, warm-up steps 10" in out
    assert f"tokens per step {64 * 32768:,} (upper bound" in out


def test_cpu_recipe_keeps_the_report_schedule_on_the_cpu_platform(capsys):
    # make pipeline's SFT stage (am_rl.sft.cpu): the report's schedule and masking, CPU engine keys, an HF checkpoint
    cfg = compose_sft("sft_tiny_cpu", ["model.path=/tiny"])
    assert cfg.optim.lr_scheduler_type == "cosine" and cfg.optim.min_lr_ratio == 0.0
    assert cfg.data.custom_cls.name == "FinalTurnSFTDataset" and cfg.data.truncation == "error"
    assert cfg.engine.strategy == "fsdp2" and cfg.engine.mixed_precision.param_dtype == "fp32"
    assert cfg.trainer.device == "cpu" and cfg.model.override_config.attn_implementation == "sdpa"
    assert "hf_model" in cfg.checkpoint.save_contents
    assert main(["--config-name", "sft_tiny_cpu", "--samples", "589", "model.path=/tiny"]) == 0
    assert "steps per epoch 18, total steps 180" in capsys.readouterr().out


def test_dry_run_refuses_what_cannot_run(tmp_path, capsys):
    assert main(["--config-name", "sft_32b", f"data.train_files={tmp_path / 'none.parquet'}"]) == 2
    assert "give --samples" in capsys.readouterr().err
    assert main(["--config-name", "sft_32b", "--samples", "10", "data.train_batch_size=60"]) == 2
    assert "not a multiple of the data-parallel size 8" in capsys.readouterr().err
    with pytest.raises(Exception, match="lr_sheduler"):
        compose_sft("sft_32b", ["+optim.lr_sheduler=x"])  # a typo fails at compose, not on the cluster
    assert plan(compose_sft("sft_7b_1node"), samples=64).steps_per_epoch == 1


def test_dataset_masks_all_but_the_final_turn_and_drops_long_samples(tiny_model, tmp_path):
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from am_rl.sft.dataset import FinalTurnSFTDataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    short = [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "earlier answer"},
             {"role": "user", "content": "And 2+2?"}, {"role": "assistant", "content": "<think>2+2=4</think> 4"}]
    long = [{"role": "user", "content": "1+1 " * 200}, {"role": "assistant", "content": "2"}]
    pq.write_table(pa.Table.from_pylist([{"messages": short}, {"messages": long}]), tmp_path / "d.parquet")
    config = OmegaConf.create({"max_length": 128, "truncation": "error", "pad_mode": "no_padding"})
    dataset = FinalTurnSFTDataset([str(tmp_path / "d.parquet")], tokenizer, config)
    assert len(dataset) == 1 and dataset.dropped_over_max_length == 1
    item = dataset[0]
    ids, mask = item["input_ids"].tolist(), item["loss_mask"].tolist()
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]).strip() == "<think>2+2=4</think> 4<|im_end|>"
    assert all(mask[mask.index(1) :])

    pq.write_table(pa.Table.from_pylist([{"messages": short[:3]}]), tmp_path / "u.parquet")
    with pytest.raises(ValueError, match="ends with a 'user' turn"):
        FinalTurnSFTDataset([str(tmp_path / "u.parquet")], tokenizer, config)[0]
