"""Agreement of our reward verifiers with the reference verifiers, over the full seeded corpora.

    PYTHONPATH=. python -m bench.reward_agreement math [--pairs 2400] [--antlr-4-13-2 DIR]
    PYTHONPATH=. python -m bench.reward_agreement ifeval

math: every pair of bench/differential/math_corpus.py scored by our math verifier (as the service's worker calls it)
and by Math-Verify called as documented (bench/differential/math_reference.py); with `--antlr-4-13-2 DIR` (a
directory holding `pip install --target DIR antlr4-python3-runtime==4.13.2`) the documented reference also runs in a
subprocess on that runtime, the one Math-Verify's README recommends. Writes bench/results/math_agreement.{json,md}.

ifeval: see bench/differential/ifeval_reference.py. Writes bench/results/ifeval_agreement.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.reward_common import RESULTS, machine, write

REPO = Path(__file__).resolve().parent.parent


def _antlr_4_13_2_verdicts(pairs, antlr_dir: str) -> list[bool]:
    from bench.differential.math_reference import documented_gold

    rows = [[documented_gold(p), p.answer] for p in pairs]
    env = {**os.environ, "PYTHONPATH": f"{antlr_dir}{os.pathsep}{REPO}"}
    check = [sys.executable, "-c", "import importlib.metadata as m; print(m.version('antlr4-python3-runtime'))"]
    version = subprocess.run(check, env=env, capture_output=True, text=True, check=True).stdout.strip()
    if version != "4.13.2":
        raise SystemExit(f"--antlr-4-13-2 {antlr_dir}: found antlr4-python3-runtime {version}, expected 4.13.2")
    out = subprocess.run(
        [sys.executable, "-m", "bench.differential.math_reference"],
        input=json.dumps(rows),
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    return json.loads(out.stdout)


def run_math(n: int, seed: int, antlr_dir: str | None) -> None:
    from bench.differential.math_corpus import corpus
    from bench.differential.math_reference import DEVIATIONS, REFERENCES, UNEXPLAINED, explain, judge
    from reward_server.config import WorkerSettings
    from reward_server.verifiers.math import MathVerifier

    pairs = corpus(n, seed)
    verifier = MathVerifier(WorkerSettings())
    t0 = time.perf_counter()
    judged = [judge(p, verifier) for p in pairs]
    elapsed = time.perf_counter() - t0
    references = {}
    for reference in REFERENCES:
        reasons = collections.Counter(explain(j, reference) for j in judged)
        agree = reasons.pop(None, 0)
        references[reference] = {"agreement": round(agree / n, 5), "disagreements": dict(reasons.most_common())}
    by_category: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for j in judged:
        for table, key in ((by_category, j.pair.category), (by_kind, j.pair.kind)):
            table[key]["pairs"] += 1
            table[key]["ours_scored_1"] += j.ours
            for reference in REFERENCES:
                table[key][f"agree_{reference}"] += j.ours == getattr(j, reference)
    unexplained = [
        {"reference": r, "index": j.pair.index, "gold": j.pair.gold, "answer": j.pair.answer, "ours": j.ours}
        for j in judged
        for r in REFERENCES
        if explain(j, r) == UNEXPLAINED
    ]
    examples = {}
    for j in judged:
        for r in REFERENCES:
            name = explain(j, r)
            if name not in (None, UNEXPLAINED) and name not in examples:
                examples[name] = {"reference": r, "gold": j.pair.gold, "answer": j.pair.answer, "ours": j.ours,
                                  "reference_verdict": getattr(j, r)}
    if antlr_dir:
        verdicts = _antlr_4_13_2_verdicts(pairs, antlr_dir)
        differ = [j for j, v in zip(judged, verdicts, strict=True) if j.ours != v]
        references["documented_antlr_4_13_2"] = {
            "agreement": round(1 - len(differ) / n, 5),
            "disagreements": [
                {"index": j.pair.index, "gold": j.pair.gold, "answer": j.pair.answer, "ours": j.ours} for j in differ
            ],
        }
    payload = {
        "benchmark": "math reward vs Math-Verify as documented, over the seeded corpus (bench/differential)",
        "pairs": n,
        "seed": seed,
        "target_agreement": 0.995,
        "references": references,
        "unexplained": unexplained,
        "deviations": {d.name: d.reason for d in DEVIATIONS},
        "deviation_examples": examples,
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_category": {k: dict(v) for k, v in sorted(by_category.items())},
        "seconds_ours_plus_references": round(elapsed, 1),
        "machine": machine(),
    }
    write("math_agreement", payload)
    (RESULTS / "math_agreement.md").write_text(_math_markdown(payload))


def _math_markdown(p: dict) -> str:
    lines = [
        "# Math reward vs Math-Verify (differential benchmark)",
        "",
        f"{p['pairs']} seeded pairs from `bench/differential/math_corpus.py` (seed {p['seed']}); reproduce with "
        "`PYTHONPATH=. python -m bench.reward_agreement math --antlr-4-13-2 DIR`. References and deviations: "
        "`bench/differential/math_reference.py`, `docs/reward_agreement.md`.",
        "",
        "| reference | agreement | disagreements by deviation |",
        "|---|---|---|",
    ]
    for name, ref in p["references"].items():
        dis = ref["disagreements"]
        text = ", ".join(f"{k}: {v}" for k, v in dis.items()) if isinstance(dis, dict) else f"{len(dis)} pairs"
        lines.append(f"| `{name}` | {ref['agreement']:.2%} | {text or '-'} |")
    lines += ["", f"Unexplained disagreements: {len(p['unexplained'])}.", "", "| category | pairs | scored 1 | "
              "agree documented | agree plain | agree extraction |", "|---|---|---|---|---|---|"]
    for name, c in p["by_category"].items():
        lines.append(
            f"| {name} | {c['pairs']} | {c['ours_scored_1']} | {c['agree_documented']} | {c['agree_plain']} | "
            f"{c['agree_extraction']} |"
        )
    lines += ["", "| generated as | pairs | scored 1 by us |", "|---|---|---|"]
    for name, c in p["by_kind"].items():
        lines.append(f"| {name} | {c['pairs']} | {c['ours_scored_1']} |")
    return "\n".join(lines) + "\n"


def run_ifeval(n: int, seed: int) -> None:
    from bench.differential.ifeval_corpus import corpus
    from bench.differential.ifeval_reference import DEVIATIONS, UNEXPLAINED, explain, judge
    from reward_server.config import WorkerSettings
    from reward_server.verifiers.ifeval import IFEvalVerifier

    verifier = IFEvalVerifier(WorkerSettings())
    t0 = time.perf_counter()
    judged = [judge(c, verifier) for c in corpus(n, seed)]
    elapsed = time.perf_counter() - t0
    reasons: collections.Counter = collections.Counter()
    by_id: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    unexplained = []
    for j in judged:
        for i, instruction_id in enumerate(j.case.instruction_id_list):
            reason = explain(j, i)
            reasons[reason] += 1
            by_id[instruction_id]["checks"] += 1
            by_id[instruction_id]["reference_followed"] += j.reference[i]
            by_id[instruction_id]["agree"] += reason is None
            if reason == UNEXPLAINED:
                unexplained.append({"index": j.case.index, "instruction_id": instruction_id,
                                    "kwargs": j.case.kwargs[i], "response": j.case.response})
        by_kind[j.case.kind]["items"] += 1
        by_kind[j.case.kind]["item_scores_agree"] += all(j.ours) == all(j.reference)
    checks = sum(reasons.values())
    agree = reasons.pop(None, 0)
    items_agree = sum(all(j.ours) == all(j.reference) for j in judged)
    payload = {
        "benchmark": "IFEval reward vs Google's checkers as lm-eval 0.4.13 ships them, over the seeded corpus",
        "items": n,
        "seed": seed,
        "instruction_checks": checks,
        "target_agreement": 0.995,
        "instruction_agreement": round(agree / checks, 5),
        "item_score_agreement": round(items_agree / n, 5),
        "disagreements": dict(reasons.most_common()),
        "unexplained": unexplained,
        "deviations": {d.name: d.reason for d in DEVIATIONS},
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_instruction_id": {k: dict(v) for k, v in sorted(by_id.items())},
        "seconds_ours_plus_reference": round(elapsed, 1),
        "machine": machine(),
    }
    write("ifeval_agreement", payload)
    (RESULTS / "ifeval_agreement.md").write_text(_ifeval_markdown(payload))


def _ifeval_markdown(p: dict) -> str:
    lines = [
        "# IFEval reward vs Google's checkers (differential benchmark)",
        "",
        f"{p['items']} seeded items from `bench/differential/ifeval_corpus.py` (seed {p['seed']}), "
        f"{p['instruction_checks']} instruction checks; reference: lm-eval 0.4.13's `tasks/ifeval`, run offline "
        "(`bench/differential/ifeval_reference.py`). Reproduce with `PYTHONPATH=. python -m bench.reward_agreement "
        "ifeval`.",
        "",
        f"- instruction verdicts agreeing: {p['instruction_agreement']:.2%} (target 99.5%)",
        f"- item scores agreeing (all instructions followed or not): {p['item_score_agreement']:.2%}",
        f"- disagreements by deviation: {', '.join(f'{k}: {v}' for k, v in p['disagreements'].items()) or 'none'}",
        f"- unexplained: {len(p['unexplained'])}",
        "",
        "| instruction id | checks | followed (reference) | agree |",
        "|---|---|---|---|",
    ]
    for name, c in p["by_instruction_id"].items():
        lines.append(f"| `{name}` | {c['checks']} | {c['reference_followed']} | {c['agree']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    logging.disable(logging.WARNING)  # Math-Verify logs every unparsable string at WARNING
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="verifier", required=True)
    m = sub.add_parser("math")
    m.add_argument("--pairs", type=int, default=2400)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--antlr-4-13-2", dest="antlr_dir", default=None)
    f = sub.add_parser("ifeval")
    f.add_argument("--items", type=int, default=1500)
    f.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.verifier == "math":
        run_math(args.pairs, args.seed, args.antlr_dir)
    else:
        run_ifeval(args.items, args.seed)


if __name__ == "__main__":
    main()
