"""Calibrate the memory plan (am_rl.trainer.memory_plan) on what runs here: the tiny model on CPU, at the demo
recipe's micro-batch, through the same terms.

For each phase the plan predicts, this runs the real thing on CPU and measures it: parameter, gradient and Adam bytes
from the tensors after a real AdamW step; the peak of everything torch allocates during the phase from the profiler's
memory timeline (torch.profiler, profile_memory), split by its categories. The forward/backward runs transformers'
Qwen2 with verl's own log-prob and entropy functions, without FSDP (one rank: FSDP's gather terms are not exercised).

    python -m bench.memory_plan        # writes bench/results/memory_plan.json and .md
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX, MemoryProfileTimeline

from am_rl.config.load import compose
from am_rl.models.tiny import ensure_tiny_model
from am_rl.trainer.memory_plan import memory_plan

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 1 << 20
FSDP_ONLY = ("gathered layers (FSDP)", "root unit gathered", "root unit gathered, with gradients")  # one rank: no FSDP


def profiled_peak(fn) -> dict[str, float]:
    """Peak bytes torch holds on the CPU while ``fn`` runs (tensors alive before it included), and each category's
    bytes at that moment."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    at_peak = max(sizes, key=sum)
    names = {i + 1: (c.name.lower() if c is not None else "unknown") for c, i in _CATEGORY_TO_INDEX.items()}
    return {"total": sum(at_peak), **{names[i]: v for i, v in enumerate(at_peak) if i in names and v}}


def state_bytes(model, optimizer) -> dict[str, int]:
    return {
        "parameters": sum(p.nbytes for p in model.parameters()),
        "gradients": sum(p.grad.nbytes for p in model.parameters() if p.grad is not None),
        "adam": sum(v.nbytes for s in optimizer.state.values() for k, v in s.items() if k != "step"),
    }


def run_case(name: str, overrides: list[str]) -> dict:
    from transformers import AutoModelForCausalLM
    from verl.utils.torch_functional import entropy_from_logits, entropy_from_logits_with_chunking, logprobs_from_logits

    model_dir = ensure_tiny_model()
    cfg = compose("demo_cpu", [f"actor_rollout_ref.model.path={model_dir}", *overrides])
    OmegaConf.resolve(cfg)
    plan = memory_plan(cfg)
    actor = cfg.actor_rollout_ref.actor
    batch, seq = actor.ppo_micro_batch_size_per_gpu, cfg.data.max_prompt_length + cfg.data.max_response_length
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.train()  # as verl's update runs it (transformers checkpoints layers only in training mode)
    if cfg.actor_rollout_ref.model.enable_gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))  # every sequence at full width: the plan's bound
    chunked = cfg.actor_rollout_ref.actor.fsdp_config.entropy_from_logits_with_chunking

    def update():
        logits = model(input_ids=ids).logits.squeeze(0)
        logp = logprobs_from_logits(logits[:, :-1], ids[:, 1:])  # verl's log-prob (its CPU path)
        (-logp.mean()).backward()  # a PPO loss is elementwise in logp: the same graph above it
        optimizer.step()

    def old_log_prob():
        with torch.no_grad():
            logits = model(input_ids=ids).logits
            flat = logits.reshape(-1, logits.shape[-1])
            entropy_from_logits_with_chunking(flat) if chunked else entropy_from_logits(flat)
            logprobs_from_logits(logits[:, :-1], ids[:, 1:])

    update()  # the first step creates Adam's state; measure a steady-state step
    optimizer.zero_grad(set_to_none=False)  # gradients resident, as in the plan's update phase
    state = state_bytes(model, optimizer)
    measured = {"actor update": profiled_peak(update)}
    optimizer.zero_grad(set_to_none=True)  # verl frees gradients after the update
    measured["old log-prob"] = profiled_peak(old_log_prob)
    phases = {}
    for phase in plan.phases:
        terms = {t.name: t.bytes for t in phase.terms if t.name not in FSDP_ONLY}
        phases[phase.name] = {"predicted_terms": terms, "predicted": sum(terms.values()),
                              "measured": measured[phase.name],
                              "not_exercised": [t.name for t in phase.terms if t.name in FSDP_ONLY]}  # fmt: skip
    return {"case": name, "overrides": overrides, "tokens": batch * seq, "state_measured": state, "phases": phases}


CASES = [
    ("demo_cpu as shipped", []),
    ("gradient checkpointing", ["actor_rollout_ref.model.enable_gradient_checkpointing=true"]),
    ("unchunked entropy", ["actor_rollout_ref.actor.entropy_from_logits_with_chunking=false"]),
]


def write_markdown(results: list[dict]) -> str:
    lines = [
        "# Memory plan vs the tiny model on CPU",
        "",
        "`python -m bench.memory_plan`: the plan of `demo_cpu` (tiny Qwen2, fp32, one rank, micro-batch 256 x 144",
        "tokens) against the same phases run on CPU, measured with torch's profiler memory timeline (peak of all",
        "live tensors during the phase). FSDP's gather terms are not exercised (no FSDP on one rank here).",
        "",
    ]
    for r in results:
        s = r["state_measured"]
        lines += [f"## {r['case']}" + (f" (`{' '.join(r['overrides'])}`)" if r["overrides"] else ""), "",
                  f"state after a real AdamW step: parameters {s['parameters'] / MiB:.3f} MiB, gradients "
                  f"{s['gradients'] / MiB:.3f} MiB, Adam m+v {s['adam'] / MiB:.3f} MiB", "",
                  "| phase | term | predicted MiB |", "|---|---|---|"]  # fmt: skip
        for name, p in r["phases"].items():
            for term, value in p["predicted_terms"].items():
                lines.append(f"| {name} | {term} | {value / MiB:.2f} |")
            m = p["measured"]
            split = ", ".join(f"{k} {v / MiB:.1f}" for k, v in m.items() if k != "total")
            lines.append(f"| **{name}** | **predicted total vs measured peak** | **{p['predicted'] / MiB:.1f} vs "
                         f"{m['total'] / MiB:.1f} ({m['total'] / p['predicted']:.2f}x)** |")  # fmt: skip
            lines.append(f"| {name} | measured at the peak, by category | {split} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    results = [run_case(name, overrides) for name, overrides in CASES]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory_plan.json").write_text(json.dumps(results, indent=2) + "\n")
    text = write_markdown(results)
    (RESULTS / "memory_plan_measured.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
