"""The per-GPU memory plan of a run: the estimated peak of each phase of a step, and the refusal of what cannot fit.

Built from the resolved config and the model's config.json (``am_rl.memory``); the dry run prints it and every launch
checks it (``am_rl.trainer.plan.dry_run``). A phase's peak is the sum of its terms, each one formula below in bytes
per GPU, marked exact (tensor sizes that follow from the shapes) or estimate (kernel workspaces, runtime overheads,
what vLLM keeps besides its KV cache). bench/memory_plan.py measures the terms on the tiny model on CPU and
bench/results/memory_plan.md compares them with this plan.

The phases of a step (verl 0.9.1's engine workers; the hybrid engine shares every GPU between actor and vLLM):
  actor update    forward/backward of one micro-batch, the optimizer state on the GPU (verl loads it for training)
  old log-prob    verl's recompute of the old policy's log-probs, always with entropy
                  (ray_trainer._compute_old_log_prob); an upper bound: its layer and logits terms are not alive
                  together
  weight sync     vLLM's weights resumed while the actor's parameters are on the GPU to be copied
  rollout         vLLM awake with its gpu_memory_utilization share, beside what the actor keeps on the GPU
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from am_rl.config.validate import ConfigError
from am_rl.trainer.external_engines import ROLLOUT_NAME

GiB = 1 << 30
KNOWN_CONFIGS = Path(__file__).resolve().parents[1] / "models" / "configs"
DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2}
CUDA_CONTEXT = 1 * GiB  # estimate: one process's CUDA context, cuBLAS workspace and NCCL communicators
ACTOR = "actor_rollout_ref.actor"
ROLLOUT = "actor_rollout_ref.rollout"


@dataclass(frozen=True)
class ModelShape:
    """What the plan reads from a (Qwen2-architecture) config.json."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    max_positions: int  # max_position_embeddings: vLLM refuses a longer max_model_len
    tied: bool  # tie_word_embeddings: lm_head shares the embedding

    @classmethod
    def from_config(cls, name: str, c: dict) -> "ModelShape":
        return cls(name=name, layers=c["num_hidden_layers"], hidden=c["hidden_size"],
                   intermediate=c["intermediate_size"], vocab=c["vocab_size"], heads=c["num_attention_heads"],
                   kv_heads=c.get("num_key_value_heads", c["num_attention_heads"]),
                   head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
                   max_positions=c["max_position_embeddings"],
                   tied=bool(c.get("tie_word_embeddings", False)))  # fmt: skip

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """One decoder layer: q/k/v projections with bias, o projection, gate/up/down MLP, two RMSNorm weights."""
        h = self.hidden
        attention = (h + 1) * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h
        return attention + 3 * h * self.intermediate + 2 * h

    @property
    def root_params(self) -> int:
        """What sits outside the layers (FSDP's root unit): embeddings, lm_head unless tied, the final norm."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.root_params


def layer_activation_bytes(m: ModelShape, b: int) -> int:
    """Bytes one token leaves saved for backward in one Qwen2 decoder layer, computing in ``b``-byte floats.

    Counted per saved tensor (transformers' Qwen2DecoderLayer, SDPA/flash attention, verified by bench/memory_plan.py):
    each RMSNorm keeps its input in fp32 (4H), its fp32 rsqrt (4), the normalised and the weighted output (2bH);
    attention keeps q, k, v and its output (b(2q + 2kv)) and an fp32 log-sum-exp per head; the MLP keeps gate, up,
    silu(gate) and their product (4bI). Exact for that module graph; an estimate for Megatron's fused kernels.
    """
    norms = 2 * (4 * m.hidden + 4 + 2 * b * m.hidden)
    attention = b * (2 * m.q_dim + 2 * m.kv_dim) + 4 * m.heads
    return norms + attention + 4 * b * m.intermediate


def layer_working_set_bytes(m: ModelShape, b: int) -> int:
    """Bytes per token a decoder layer holds at once without autograd (the old-log-prob forward): the MLP's gate, its
    silu, up and their product, beside the residual stream and a norm's output. Estimate (measured on the tiny model
    by bench/memory_plan.py)."""
    return b * (4 * m.intermediate + 2 * m.hidden)


def head_activation_bytes(m: ModelShape, b: int) -> int:
    """Bytes per token the final RMSNorm saves for backward (as in a layer: fp32 input and rsqrt, its normalised and
    weighted outputs, the latter lm_head's input)."""
    return 4 * m.hidden + 4 + 2 * b * m.hidden


def entropy_bytes(tokens: int, vocab: int, b: int, chunk: int | None) -> int:
    """Temporaries of verl's entropy_from_logits on (tokens, vocab) logits: softmax and softmax * logits beside the
    logits (2 copies); chunked (entropy_from_logits_with_chunking), 3 fp32 copies of one chunk of rows."""
    if chunk is None:
        return 2 * tokens * vocab * b
    return 3 * min(chunk, tokens) * vocab * 4


def kv_bytes_per_token(m: ModelShape, tp: int, b: int = 2) -> int:
    """KV cache bytes one token takes on one GPU of a tensor-parallel engine (kv heads split by TP, replicated when
    TP exceeds them)."""
    return 2 * m.layers * max(1, m.kv_heads // tp) * m.head_dim * b


def micro_batch_tokens(dynamic: bool, max_token_len_per_gpu: int, micro_batch_per_gpu: int | None, seq_len: int,
                       split: int) -> int:  # fmt: skip
    """Tokens one GPU holds in a micro-batch. Dynamic batching packs at most max_token_len_per_gpu x ``split`` tokens
    (verl multiplies the budget by the Ulysses or context-parallel size) and splits them over ``split`` GPUs, so each
    holds the budget; fixed micro-batches hold micro_batch_per_gpu sequences of up to seq_len tokens, split too."""
    if dynamic:
        return max_token_len_per_gpu
    return math.ceil((micro_batch_per_gpu or 1) * seq_len / split)


@dataclass(frozen=True)
class Term:
    name: str
    bytes: float
    exact: bool  # False: an estimate (see the formula where it is built)
    setting: str = ""  # the config key that shrinks it, named in a refusal


@dataclass(frozen=True)
class Phase:
    name: str
    terms: tuple[Term, ...]

    @property
    def peak(self) -> float:
        return sum(t.bytes for t in self.terms)


@dataclass(frozen=True)
class MemoryPlan:
    model: ModelShape
    device: str  # trainer.device
    gpu_bytes: float  # am_rl.memory.gpu_memory_gib
    limit_bytes: float  # gpu_bytes x am_rl.memory.max_fraction
    phases: tuple[Phase, ...]
    max_model_len: int
    kv_tokens_per_engine: int | None  # None: the engines are not on the trainer's devices
    max_num_seqs: int
    errors: tuple[str, ...]  # settings that cannot run whatever the memory (lengths, token budgets)

    def violations(self) -> list[str]:
        found = list(self.errors)
        for phase in self.phases:
            if phase.peak > self.limit_bytes:
                shrinkers = sorted((t for t in phase.terms if t.setting), key=lambda t: -t.bytes)[:3]
                found.append(
                    f"the {phase.name} phase plans {phase.peak / GiB:.1f} GiB per GPU > {self.limit_bytes / GiB:.1f} "
                    f"GiB (am_rl.memory.max_fraction of {self.gpu_bytes / GiB:.1f} GiB); change "
                    + "; ".join(f"{t.setting} ({t.name}: {t.bytes / GiB:.1f} GiB)" for t in shrinkers)
                )
        if self.kv_tokens_per_engine is not None and self.kv_tokens_per_engine < self.max_model_len:
            found.append(
                f"{ROLLOUT}.gpu_memory_utilization leaves KV cache for {self.kv_tokens_per_engine:,} tokens per engine "
                f"< max_model_len {self.max_model_len:,}: vLLM refuses to start (raise it, or the engine's TP)"
            )
        return found


def load_model_shape(cfg: DictConfig) -> ModelShape:
    """model.path/config.json where it exists here, else am_rl.memory.model_config (a file or a known name), else the
    known config named like model.path's last component."""
    path, named = cfg.actor_rollout_ref.model.path, cfg.am_rl.memory.model_config
    candidates = [Path(str(path)) / "config.json"] if path else []
    for name in [named, Path(str(path)).name.lower() if path else None]:
        if name:
            candidates += [Path(name), KNOWN_CONFIGS / f"{name}.json"]
    for candidate in candidates:
        if candidate.is_file():
            return ModelShape.from_config(str(candidate), json.loads(candidate.read_text()))
    known = sorted(p.stem for p in KNOWN_CONFIGS.glob("*.json"))
    raise ConfigError(
        f"no config.json for the memory plan of actor_rollout_ref.model.path={path}: set am_rl.memory.model_config to "
        f"a config.json or one of {known}"
    )


def dtype_bytes(name: str | None, default: str) -> int:
    return DTYPE_BYTES[str(name or default)]


def contexts(cfg: DictConfig, processes: int) -> tuple[Term, ...]:
    if cfg.trainer.device != "cuda":
        return ()
    return (Term(f"CUDA contexts x{processes}", processes * CUDA_CONTEXT, False),)


def length_errors(cfg: DictConfig, m: ModelShape, split: int, split_name: str) -> list[str]:
    """Settings verl or vLLM refuse at run time, whatever the memory."""
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    seq = cfg.data.max_prompt_length + cfg.data.max_response_length
    errors = []
    max_model_len = rollout.max_model_len or seq
    if max_model_len > m.max_positions:
        errors.append(f"{ROLLOUT}.max_model_len={max_model_len} > the model's max_position_embeddings "
                      f"{m.max_positions} ({m.name}): verl's vLLM server refuses it; shorten data.max_response_length")
    if actor.use_dynamic_bsz and not cfg.trainer.get("val_only", False):
        for key, budget in ((f"{ACTOR}.ppo_max_token_len_per_gpu", actor.ppo_max_token_len_per_gpu),
                            (f"{ROLLOUT}.log_prob_max_token_len_per_gpu", rollout.log_prob_max_token_len_per_gpu)):
            if budget * split < seq:
                errors.append(f"{key}={budget} x {split_name}={split} < max_prompt_length + max_response_length = "
                              f"{seq}: verl refuses a sequence longer than its micro-batch budget")  # fmt: skip
    return errors


def fsdp_actor_phases(cfg: DictConfig, m: ModelShape) -> tuple[list[Phase], dict]:
    """The FSDP actor's update and old-log-prob phases, and what it keeps on the GPU between them."""
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    fsdp = actor.fsdp_config
    gpus = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    shards = fsdp.fsdp_size if fsdp.fsdp_size > 0 else gpus
    master = dtype_bytes(fsdp.model_dtype, "fp32")  # the sharded parameters, their gradients, Adam's m and v
    b = dtype_bytes((fsdp.get("mixed_precision") or {}).get("param_dtype"), "bf16")  # compute dtype
    sp = max(actor.get("ulysses_sequence_parallel_size", 1), fsdp.get("ulysses_sequence_parallel_size", 1))
    seq = cfg.data.max_prompt_length + cfg.data.max_response_length
    t_update = micro_batch_tokens(actor.use_dynamic_bsz, actor.ppo_max_token_len_per_gpu,
                                  actor.ppo_micro_batch_size_per_gpu, seq, sp)  # fmt: skip
    t_forward = micro_batch_tokens(actor.use_dynamic_bsz, rollout.log_prob_max_token_len_per_gpu,
                                   rollout.log_prob_micro_batch_size_per_gpu, seq, sp)  # fmt: skip
    temperature_copy = 0 if rollout.temperature == 1.0 else 1  # verl scales the logits out of place unless T = 1
    params = Term("parameters (sharded)", m.params * master / shards, True)
    optimizer = Term("Adam m, v (sharded)", 2 * m.params * master / shards, True,
                     f"{ACTOR}.fsdp_config.optimizer_offload")  # fmt: skip
    # FSDP gathers a layer in the compute dtype, prefetching the next (2 layers), and reduce-scatters a layer's
    # gradients from fp32; its root unit (embeddings, lm_head) stays gathered through forward and backward.
    gathered = Term("gathered layers (FSDP)", m.layer_params * (2 * b + 4), False)
    budget = f"{ACTOR}.ppo_max_token_len_per_gpu" if actor.use_dynamic_bsz else f"{ACTOR}.ppo_micro_batch_size_per_gpu"
    if cfg.actor_rollout_ref.model.enable_gradient_checkpointing:
        activations = (Term(f"layer inputs kept ({t_update:,} tokens)", m.layers * t_update * b * m.hidden, True,
                            budget),
                       Term("one layer recomputed", t_update * layer_activation_bytes(m, b), True, budget))
    else:
        activations = (Term(f"activations, all layers ({t_update:,} tokens)",
                            m.layers * t_update * layer_activation_bytes(m, b),
                            True, "actor_rollout_ref.model.enable_gradient_checkpointing"),)  # fmt: skip
    update_entropy = actor.calculate_entropy or actor.entropy_coeff != 0
    update = [params, Term("gradients (sharded)", m.params * master / shards, True), optimizer, gathered,
              Term("root unit gathered, with gradients", m.root_params * 2 * b, False), *activations,
              Term("final norm, lm_head input", t_update * head_activation_bytes(m, b), True, budget),
              Term("logits", t_update * m.vocab * b * (1 + temperature_copy), True, budget)]  # fmt: skip
    if update_entropy:  # the loss's entropy keeps its softmax for backward, and the logits' gradient is not in place
        update.append(Term("entropy in the loss", 3 * t_update * m.vocab * b, False, f"{ACTOR}.entropy_coeff"))
    if fsdp.use_no_sync_for_gradient_accumulation:
        update.append(Term("unsharded gradients (no_sync)", m.params * b, True,
                           f"{ACTOR}.fsdp_config.use_no_sync_for_gradient_accumulation"))  # fmt: skip
    chunked = fsdp.entropy_from_logits_with_chunking
    forward_budget = (f"{ROLLOUT}.log_prob_max_token_len_per_gpu" if actor.use_dynamic_bsz
                      else f"{ROLLOUT}.log_prob_micro_batch_size_per_gpu")  # fmt: skip
    forward = [params, *([] if fsdp.optimizer_offload else [optimizer]), gathered,
               Term("root unit gathered", m.root_params * b, False),
               Term(f"one layer ({t_forward:,} tokens)", t_forward * layer_working_set_bytes(m, b), False,
                    forward_budget),
               Term("logits", t_forward * m.vocab * b * (1 + temperature_copy), True, forward_budget),
               Term("entropy" + (" (chunked)" if chunked else ""),
                    entropy_bytes(t_forward, m.vocab, b, fsdp.entropy_from_logits_chunk_size if chunked else None),
                    True, f"{ACTOR}.entropy_from_logits_with_chunking" if not chunked else "")]  # fmt: skip
    resident = {"params": None if fsdp.param_offload else params,
                "optimizer": None if fsdp.optimizer_offload else optimizer, "grads": None,
                "sync_params": params, "sync_tensor": m.vocab * m.hidden * (master + 2)}  # fmt: skip
    return [Phase("actor update", tuple(update)), Phase("old log-prob", tuple(forward))], resident


def megatron_actor_phases(cfg: DictConfig, m: ModelShape) -> tuple[list[Phase], dict]:
    """The Megatron actor's phases. Activations follow the transformers layer (an estimate for Megatron's kernels),
    split over TP by sequence parallelism; 1F1B keeps PP micro-batches in flight on the first stage, i.e. every layer's
    activations of one micro-batch; the logits live on the last stage (counted with them: an upper bound)."""
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    mg = actor.megatron
    optim = actor.optim
    tp, pp, cp = mg.tensor_model_parallel_size, mg.pipeline_model_parallel_size, mg.context_parallel_size
    dp = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node // (tp * pp * cp)
    b = dtype_bytes(mg.dtype, "bf16")
    local = m.layers // pp * m.layer_params // tp + m.vocab * m.hidden // tp  # the first/last stage's parameters
    seq = cfg.data.max_prompt_length + cfg.data.max_response_length
    t_update = micro_batch_tokens(actor.use_dynamic_bsz, actor.ppo_max_token_len_per_gpu,
                                  actor.ppo_micro_batch_size_per_gpu, seq, cp)  # fmt: skip
    t_forward = micro_batch_tokens(actor.use_dynamic_bsz, rollout.log_prob_max_token_len_per_gpu,
                                   rollout.log_prob_micro_batch_size_per_gpu, seq, cp)  # fmt: skip
    # Distributed optimizer: fp32 master copy, m and v, sharded over data (and context) parallel ranks.
    opt_bytes = 4 + dtype_bytes(optim.get("exp_avg_dtype"), "fp32") + dtype_bytes(optim.get("exp_avg_sq_dtype"), "fp32")
    opt_shards = dp * cp if mg.use_distributed_optimizer else 1
    params = Term("parameters (TP x PP shard)", local * b, True, f"{ACTOR}.megatron.param_offload")
    grads = Term("gradient buffer", local * dtype_bytes(optim.get("main_grads_dtype"), "fp32"), True,
                 f"{ACTOR}.megatron.param_offload")  # fmt: skip
    optimizer = Term("optimizer (distributed)", local * opt_bytes / opt_shards, True,
                     f"{ACTOR}.megatron.optimizer_offload")  # fmt: skip
    recompute = mg.override_transformer_config
    per_stage = m.layers // pp
    if recompute.get("recompute_granularity") == "full":
        uniform = recompute.get("recompute_method") == "uniform"
        recomputed = per_stage if uniform else min(recompute.get("recompute_num_layers") or 0, per_stage)
    else:
        recomputed = 0  # selective (core attention) recompute saves nothing next to flash attention
    per_layer = layer_activation_bytes(m, b) / tp
    budget = f"{ACTOR}.ppo_max_token_len_per_gpu"
    stage = recomputed * t_update * b * m.hidden / tp + (per_stage - recomputed) * t_update * per_layer
    activations = Term(f"activations, {pp} in flight ({t_update:,} tokens)", pp * stage, False,
                       budget if recomputed else f"{ACTOR}.megatron.override_transformer_config.recompute_granularity")
    # Vocab-parallel cross entropy: the logits' shard, upcast to fp32, with its softmax.
    update = [params, grads, optimizer, activations,
              *([Term("one layer recomputed", t_update * per_layer, False, budget)] if recomputed else []),
              Term("logits (vocab-parallel)", t_update * m.vocab / tp * (b + 8), False, budget)]  # fmt: skip
    chunked = mg.entropy_from_logits_with_chunking
    forward = [params, grads, *([] if mg.optimizer_offload else [optimizer]),
               Term(f"one layer ({t_forward:,} tokens)", t_forward * layer_working_set_bytes(m, b) / tp, False,
                    f"{ROLLOUT}.log_prob_max_token_len_per_gpu"),
               Term("logits (vocab-parallel)", t_forward * m.vocab / tp * (b + 8), False,
                    f"{ROLLOUT}.log_prob_max_token_len_per_gpu"),
               Term("entropy" + (" (chunked)" if chunked else ""),
                    entropy_bytes(t_forward, m.vocab // tp, 4, mg.entropy_from_logits_chunk_size if chunked else None),
                    False, "" if chunked else f"{ACTOR}.entropy_from_logits_with_chunking")]  # fmt: skip
    resident = {"params": None if mg.param_offload else params, "grads": None if mg.param_offload else grads,
                "optimizer": None if mg.optimizer_offload else optimizer, "sync_params": params,
                "sync_tensor": m.vocab * m.hidden * b}  # fmt: skip
    return [Phase("actor update", tuple(update)), Phase("old log-prob", tuple(forward))], resident


def vllm_workspace_bytes(cfg: DictConfig, m: ModelShape, tp: int) -> float:
    """Estimate of what vLLM keeps in its share besides weights and KV: the profiling forward of max_num_batched_tokens
    (a layer's widest intermediates), the sampler's fp32 logits and probabilities for max_num_seqs rows, and 1 GiB of
    CUDA graphs and runtime."""
    r = cfg.actor_rollout_ref.rollout
    layer = r.max_num_batched_tokens * (4 * m.hidden + 3 * m.intermediate // tp) * 2
    return layer + 2 * r.max_num_seqs * m.vocab * 4 + GiB


def memory_plan(cfg: DictConfig) -> MemoryPlan:
    """The plan of a resolved config (pure but for reading the model's config.json)."""
    m = load_model_shape(cfg)
    rollout = cfg.actor_rollout_ref.rollout
    gpu = cfg.am_rl.memory.gpu_memory_gib * GiB
    megatron = cfg.actor_rollout_ref.actor.strategy == "megatron"
    if megatron:
        mg = cfg.actor_rollout_ref.actor.megatron
        actor_phases, resident = megatron_actor_phases(cfg, m)
        errors = length_errors(cfg, m, mg.context_parallel_size, f"{ACTOR}.megatron.context_parallel_size")
    else:
        actor_phases, resident = fsdp_actor_phases(cfg, m)
        sp = cfg.actor_rollout_ref.actor.get("ulysses_sequence_parallel_size", 1)
        errors = length_errors(cfg, m, sp, f"{ACTOR}.ulysses_sequence_parallel_size")
    hybrid = rollout.name != ROLLOUT_NAME
    phases = [] if cfg.trainer.get("val_only", False) else [
        Phase(p.name, p.terms + contexts(cfg, 2 if hybrid else 1)) for p in actor_phases]  # fmt: skip
    kv_tokens = None
    if hybrid:
        tp = rollout.tensor_model_parallel_size
        shards = tp * rollout.pipeline_model_parallel_size
        weights = m.params * dtype_bytes(rollout.dtype, "bf16") / shards
        kept = [t for t in (resident["params"], resident["grads"], resident["optimizer"]) if t is not None]
        sync = [Term("vLLM weights", weights, True), resident["sync_params"],
                *[t for t in (resident["grads"], resident["optimizer"]) if t is not None],
                Term("weight-sync bucket", rollout.checkpoint_engine.update_weights_bucket_megabytes << 20, False),
                Term("largest tensor gathered", resident["sync_tensor"], False), *contexts(cfg, 2)]  # fmt: skip
        share = rollout.gpu_memory_utilization * gpu
        awake = [Term("vLLM share (weights, KV cache, workspace)", share, True, f"{ROLLOUT}.gpu_memory_utilization"),
                 *kept, *contexts(cfg, 1)]  # fmt: skip
        phases += [Phase("weight sync", tuple(sync)), Phase("rollout", tuple(awake))]
        kv_pool = share - weights - vllm_workspace_bytes(cfg, m, tp)
        kv_tokens = max(0, int(kv_pool // kv_bytes_per_token(m, tp)))
    return MemoryPlan(
        model=m, device=cfg.trainer.device, gpu_bytes=gpu, limit_bytes=gpu * cfg.am_rl.memory.max_fraction,
        phases=tuple(phases),
        max_model_len=rollout.max_model_len or cfg.data.max_prompt_length + cfg.data.max_response_length,
        kv_tokens_per_engine=kv_tokens, max_num_seqs=rollout.max_num_seqs, errors=tuple(errors),
    )  # fmt: skip


def checked_memory_plan(cfg: DictConfig) -> MemoryPlan:
    """The plan of ``cfg``, or ConfigError naming every setting that keeps it from running."""
    plan = memory_plan(cfg)
    if plan.violations():
        listed = "\n  - ".join(plan.violations())
        raise ConfigError(f"this config does not fit (am_rl.trainer.memory_plan):\n  - {listed}")
    return plan


def format_memory_plan(plan: MemoryPlan) -> str:
    m = plan.model
    unit, size = ("GiB", GiB) if max((p.peak for p in plan.phases), default=0) >= GiB else ("MiB", 1 << 20)
    lines = [
        f"memory plan    per {plan.device} device of {plan.gpu_bytes / GiB:.1f} GiB, limit "
        f"{plan.limit_bytes / GiB:.1f} GiB; model {Path(m.name).stem}: {m.params / 1e9:.3g}B params, "
        f"{m.layers} layers, hidden {m.hidden}, "
        f"vocab {m.vocab}, max positions {m.max_positions:,}  (~ = estimate)",
    ]
    for phase in plan.phases:
        mark = "OVER" if phase.peak > plan.limit_bytes else "ok"
        lines.append(f"  {phase.name:<44} {phase.peak / size:9.2f} {unit}  {mark}")
        for t in phase.terms:
            lines.append(f"    {('' if t.exact else '~') + t.name:<42} {t.bytes / size:9.2f}")
    if plan.kv_tokens_per_engine is not None:
        per_seq = plan.kv_tokens_per_engine // max(plan.max_num_seqs, 1)
        lines.append(
            f"  KV cache: ~{plan.kv_tokens_per_engine:,} tokens per engine = "
            f"{plan.kv_tokens_per_engine / plan.max_model_len:.1f} sequences of max_model_len {plan.max_model_len:,}; "
            f"max_num_seqs {plan.max_num_seqs} -> ~{per_seq:,} tokens each when all run"
        )
    return "\n".join(lines)
