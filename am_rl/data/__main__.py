"""python -m am_rl.data {ingest,clean,select,stage2} ...: the data pipeline in front of the trainer.

Each subcommand reads its input, writes a verl-schema parquet and a JSON report beside it (<output stem>.report.json:
counts after every filter, every dropped row with its id and reason), and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from am_rl.data.report import StageReport, report_path
from am_rl.data.rows import read_rows, write_rows
from am_rl.rewards.client import RewardServiceError
from am_rl.rollout import RolloutError


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    from am_rl.data.clean import CleanOptions
    from am_rl.data.ingest import IngestOptions
    from am_rl.data.difficulty import SelectOptions

    p = argparse.ArgumentParser(prog="python -m am_rl.data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(s):
        s.add_argument("-o", "--output", required=True, type=Path, help="output parquet")
        s.add_argument("--report", type=Path, default=None, help="report JSON (default: beside the output)")

    i = sub.add_parser("ingest", help="JSONL / Parquet / save_to_disk folders -> verl-schema parquet")
    i.add_argument("inputs", nargs="+", type=Path)
    common(i)
    io = IngestOptions()
    i.add_argument("--data-source", default=None, help="for rows without data_source (default: the file's stem)")
    i.add_argument("--system-prompt", default=io.system_prompt, help="first message of every prompt ('' for none)")
    i.add_argument("--math-suffix", default=io.math_suffix, help="appended to math questions ('' for none)")
    i.add_argument("--field", action="append", default=[], type=_pair, metavar="OURS=THEIRS",
                   help="read our field from the input's column, e.g. question=title (repeatable)")  # fmt: skip
    i.add_argument("--split", default=None, help="split of a saved DatasetDict")

    c = sub.add_parser("clean", help="URL/image filter, exact + near dedup, decontamination")
    c.add_argument("input", type=Path)
    common(c)
    co = CleanOptions()
    c.add_argument("--eval", action="append", default=[], type=Path, metavar="FILE",
                   help="evaluation set to decontaminate against (repeatable)")  # fmt: skip
    c.add_argument("--near-dup-threshold", type=float, default=co.near_dup_threshold)
    c.add_argument("--shingle-chars", type=int, default=co.shingle_chars)
    c.add_argument("--num-perm", type=int, default=co.num_perm)
    c.add_argument("--ngram", type=int, default=co.ngram, help="word n-gram size of the contamination check")

    s = sub.add_parser("select", help="difficulty selection: keep min < pass rate < max under the current model")
    s.add_argument("input", type=Path)
    common(s)
    so = SelectOptions()
    s.add_argument("--balancer-url", required=True, help="the load balancer fronting the model's vLLM servers")
    s.add_argument("--model", required=True, help="the model name the engines serve")
    s.add_argument("--tokenizer", required=True, help="HF tokenizer (model directory) that applies the chat template")
    s.add_argument("--reward-url", required=True, help="the reward service (its API key: $AM_RL_REWARD_API_KEY)")
    s.add_argument("--pass-rates", type=Path, default=None,
                   help="pass-rate JSONL (default: <output stem>.pass_rates.jsonl)")  # fmt: skip
    s.add_argument("-k", type=int, default=so.k, help="samples per query")
    s.add_argument("--max-tokens", type=int, default=so.max_tokens)
    s.add_argument("--temperature", type=float, default=so.temperature)
    s.add_argument("--top-p", type=float, default=so.top_p)
    s.add_argument("--min-pass-rate", type=float, default=so.min_pass_rate, help="keep pass rate > this")
    s.add_argument("--max-pass-rate", type=float, default=so.max_pass_rate, help="keep pass rate < this")
    s.add_argument("--pass-score", type=float, default=so.pass_score, help="a sample passes at reward >= this")
    s.add_argument("--rows-per-batch", type=int, default=so.rows_per_batch)
    s.add_argument("--types", default=",".join(so.types), help="reward types to select on; others pass through")
    s.add_argument("--seed", type=int, default=so.seed)

    t = sub.add_parser("stage2", help="stage-1 data minus queries solved k/k, plus chat / instruction-following mixes")
    t.add_argument("input", type=Path, help="the stage-1 parquet")
    common(t)
    t.add_argument("--logs", action="append", default=[], type=Path, required=True, metavar="JSONL",
                   help="stage-1 pass-rate records {row_id, k, passes} (repeatable; later records win)")  # fmt: skip
    t.add_argument("--mix", action="append", default=[], type=_pair, metavar="PARQUET=RATIO",
                   help="add round(RATIO x unsolved stage-1 rows) rows of PARQUET (repeatable)")  # fmt: skip
    t.add_argument("--mix-count", action="append", default=[], type=_pair, metavar="PARQUET=N",
                   help="add N rows of PARQUET (repeatable)")  # fmt: skip
    t.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace) -> StageReport:
    if args.command == "ingest":
        from am_rl.data.ingest import IngestOptions, ingest

        opts = IngestOptions(data_source=args.data_source, system_prompt=args.system_prompt,
                             math_suffix=args.math_suffix, renames=tuple(args.field), split=args.split)  # fmt: skip
        rows, report = ingest(args.inputs, opts)
    elif args.command == "clean":
        from am_rl.data.clean import CleanOptions, clean

        opts = CleanOptions(near_dup_threshold=args.near_dup_threshold, shingle_chars=args.shingle_chars,
                            num_perm=args.num_perm, ngram=args.ngram, eval_files=tuple(args.eval))  # fmt: skip
        rows, report = clean(read_rows(args.input), opts)
    elif args.command == "select":
        from transformers import AutoTokenizer

        from am_rl.data.difficulty import SelectOptions, select

        opts = SelectOptions(k=args.k, max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                             min_pass_rate=args.min_pass_rate, max_pass_rate=args.max_pass_rate,
                             pass_score=args.pass_score, rows_per_batch=args.rows_per_batch,
                             types=tuple(t for t in args.types.split(",") if t), seed=args.seed)  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        rows, rates, report = select(read_rows(args.input), tokenizer, args.balancer_url, args.model,
                                     args.reward_url, opts)  # fmt: skip
        rates_path = args.pass_rates or args.output.with_name(args.output.name.split(".")[0] + ".pass_rates.jsonl")
        rates_path.parent.mkdir(parents=True, exist_ok=True)
        rates_path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in rates))
        report.notes["pass_rates_file"] = str(rates_path)
    else:
        from am_rl.data.stage2 import MixSpec, build_stage2

        mixes = tuple(MixSpec(Path(p), ratio=float(v)) for p, v in args.mix)
        mixes += tuple(MixSpec(Path(p), count=int(v)) for p, v in args.mix_count)
        rows, report = build_stage2(read_rows(args.input), args.logs, mixes, seed=args.seed)
    report.notes["output"] = str(args.output)
    path = report.write(args.report or report_path(args.output))
    print(report.summary())
    print(f"report: {path}")
    write_rows(rows, args.output)
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError, ConnectionError, RolloutError, RewardServiceError) as e:
        print(f"python -m am_rl.data {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
