"""The memory plan: its formulas against what torch builds and saves, every shipped GPU recipe within 90% of an 80 GB
GPU on its cluster shape, and the refusals naming the setting to change."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from transformers import Qwen2Config, Qwen2ForCausalLM

from am_rl.config import ConfigError
from am_rl.config.load import compose
from am_rl.trainer.memory_plan import (
    GiB,
    KNOWN_CONFIGS,
    ModelShape,
    layer_activation_bytes,
    load_model_shape,
    memory_plan,
)
from am_rl.trainer.plan import dry_run

SHIPPED = {  # recipe -> the cluster shape it plans for
    "stage1_32b": (8, 8),
    "stage1_32b_megatron": (8, 8),
    "stage2_32b": (8, 8),
    "eval_32b": (8, 8),
    "stage1_7b_1node": (1, 8),
}


def plan(name: str, *overrides: str):
    cfg = compose(name, list(overrides))
    OmegaConf.resolve(cfg)
    return memory_plan(cfg)


def known(name: str) -> dict:
    return json.loads((KNOWN_CONFIGS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", ["qwen2.5-32b", "qwen2.5-7b", "tiny"])
def test_parameter_count_is_what_transformers_builds(name):
    config = Qwen2Config(**{k: v for k, v in known(name).items() if k != "architectures"})
    with torch.device("meta"):  # no memory: a 32B model's shapes only
        model = Qwen2ForCausalLM(config)
    shape = ModelShape.from_config(name, known(name))
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.layer_params == sum(p.numel() for p in model.model.layers[0].parameters())


def saved_activation_bytes(layer, hidden_states, position_embeddings) -> int:
    """Bytes of the distinct storages autograd saves for backward through ``layer``, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(hidden_states, position_embeddings=position_embeddings, attention_mask=None)
    return sum(seen.values())


@pytest.mark.parametrize("dtype, b", [(torch.float32, 4), (torch.bfloat16, 2)])
@pytest.mark.parametrize("hidden, intermediate, heads, kv_heads", [(128, 384, 2, 1), (256, 1024, 4, 2)])
def test_layer_activation_formula_matches_what_autograd_saves(dtype, b, hidden, intermediate, heads, kv_heads):
    config = Qwen2Config(vocab_size=64, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=1,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=64,
                         attn_implementation="sdpa")  # fmt: skip
    model = Qwen2ForCausalLM(config).to(dtype)
    tokens = 96
    x = torch.randn(1, tokens, hidden, dtype=dtype, requires_grad=True)
    rope = model.model.rotary_emb(x, torch.arange(tokens)[None])  # shared by every layer: not a per-layer cost
    measured = saved_activation_bytes(model.model.layers[0], x, rope) - sum(t.nbytes for t in rope)
    shape = ModelShape.from_config("probe", config.to_dict())
    assert measured == tokens * layer_activation_bytes(shape, b)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_gpu_recipe_fits_its_cluster(name):
    nodes, gpus = SHIPPED[name]
    p = plan(name, f"trainer.nnodes={nodes}", f"trainer.n_gpus_per_node={gpus}")
    assert p.violations() == []
    assert p.limit_bytes == pytest.approx(0.9 * 79.6 * GiB)
    expected = {"weight sync", "rollout"} if name == "eval_32b" else {"actor update", "old log-prob", "weight sync",
                                                                      "rollout"}  # fmt: skip
    assert {ph.name for ph in p.phases} == expected
    assert all(ph.peak <= p.limit_bytes for ph in p.phases)
    assert p.kv_tokens_per_engine >= p.max_model_len


def test_stage1_numbers_follow_from_the_formulas():
    p = plan("stage1_32b")
    update = {t.name: t.bytes for t in p.phases[0].terms}
    params = 32_763_876_352
    assert update["parameters (sharded)"] == params * 4 / 64  # fp32 shards over 64 GPUs
    assert update["layer inputs kept (16,384 tokens)"] == 64 * 16384 * 2 * 5120  # bf16 checkpoints of 64 layers
    assert update["logits"] == 16384 * 152064 * 2
    rollout = {t.name: t.bytes for t in p.phases[3].terms}
    assert rollout["vLLM share (weights, KV cache, workspace)"] == 0.7 * 79.6 * GiB


@pytest.mark.parametrize(
    "name, overrides, setting",
    [
        # stage 2's old budget x 1.6: the update's activations and logits outgrow the GPU
        ("stage2_32b", ["actor_rollout_ref.actor.ppo_max_token_len_per_gpu=65536"],
         "actor_rollout_ref.actor.ppo_max_token_len_per_gpu"),
        ("stage1_32b", ["actor_rollout_ref.actor.entropy_from_logits_with_chunking=false",
                        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=65536"],
         "actor_rollout_ref.actor.entropy_from_logits_with_chunking"),
        # the recipe before its fix: no recompute, 1F1B holding 2 micro-batches of every layer
        ("stage1_32b_megatron",
         ["actor_rollout_ref.actor.megatron.override_transformer_config.recompute_granularity=null",
          "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=32768"],
         "actor_rollout_ref.actor.megatron.override_transformer_config.recompute_granularity"),
        ("stage1_32b_megatron", ["actor_rollout_ref.actor.megatron.param_offload=false",
                                 "actor_rollout_ref.actor.megatron.optimizer_offload=false"],
         "actor_rollout_ref.actor.megatron.param_offload"),
        ("stage1_32b", ["actor_rollout_ref.rollout.gpu_memory_utilization=0.9"],
         "actor_rollout_ref.rollout.gpu_memory_utilization"),
        ("stage1_32b", ["actor_rollout_ref.actor.ppo_max_token_len_per_gpu=2048"],
         "ppo_max_token_len_per_gpu=2048 x actor_rollout_ref.actor.ulysses_sequence_parallel_size=8 < "),
        ("stage2_32b", ["am_rl.memory.model_config=qwen2.5-32b-instruct"],
         "actor_rollout_ref.rollout.max_model_len=34816 > the model's max_position_embeddings 32768"),
    ],
)  # fmt: skip
def test_a_config_that_cannot_run_is_refused_naming_the_setting(name, overrides, setting):
    cfg = compose(name, overrides)
    assert any(setting in v for v in plan(name, *overrides).violations())
    OmegaConf.set_struct(cfg, False)
    cfg.am_rl.reward.url = "http://r:8200"
    with pytest.raises(ConfigError, match="does not fit") as refused:
        dry_run(cfg)
    assert setting in str(refused.value)


def test_model_shape_comes_from_the_path_then_the_named_config(tmp_path):
    cfg = compose("stage1_7b_1node")
    assert load_model_shape(cfg).hidden == 3584  # Qwen/Qwen2.5-7B -> qwen2.5-7b.json
    (tmp_path / "config.json").write_text(json.dumps(known("qwen2.5-32b-instruct")))
    cfg.actor_rollout_ref.model.path = str(tmp_path)
    assert load_model_shape(cfg).max_positions == 32768  # a checkpoint on this machine wins
    cfg.actor_rollout_ref.model.path = "/nonexistent/my-sft"
    with pytest.raises(ConfigError, match="am_rl.memory.model_config"):
        load_model_shape(cfg)


def test_committed_tiny_config_is_the_built_tiny_model(tiny_model):
    built = json.loads((tiny_model / "config.json").read_text())
    assert {k: built[k] for k in known("tiny")} == known("tiny")
