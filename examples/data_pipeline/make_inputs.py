"""Writes the data-pipeline example's inputs (committed beside this file; tests check they are up to date).

Arithmetic in the CPU demo's format plus a few code and IFEval rows, with planted problems that each filter must
catch: exact and near duplicates, URL and image rows, a row copied from the evaluation set, and bad rows.

    python examples/data_pipeline/make_inputs.py [OUT_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from am_rl.data.arithmetic import ArithmeticTask, make_problems

HERE = Path(__file__).resolve().parent
UNIQUE_ARITHMETIC = 48  # distinct generated questions (operands 0..5, as in the demo)

EVAL = [  # an evaluation set in AIME style; the training data must not contain these
    "Find the number of ordered pairs of positive integers (a, b) such that a + b = 1000 and neither a nor b has "
    "a zero digit.",
    "Let N be the number of consecutive zeros at the right end of the decimal representation of the product of "
    "the factorials 1!2!3!...100!. Find the remainder when N is divided by 1000.",
    "What is 4+4?",
]

WORD_PROBLEM = (
    "Tom has 3 apples and then buys 4 more apples at the market on Sunday. How many apples does Tom have now?"
)

PLANTED_MATH = [
    # near duplicates: the same word problem twice, worded a little differently
    {"question": WORD_PROBLEM, "answer": "7"},
    {"question": WORD_PROBLEM.replace("now?", "in total now?"), "answer": "7"},
    # URLs and image references
    {"question": "What is 1+5? The rules are at https://example.com/rules.", "answer": "6"},
    {"question": "Compute 3*3 as in www.example.org/mult", "answer": "9"},
    {"question": "What is the area of the triangle shown in the figure?", "answer": "6"},
    {"question": "Count the dots: ![dots](dots.png)", "answer": "4"},
    # contaminated: the second evaluation question, with a different question mark
    {"question": EVAL[1].replace("1000.", "1000?"), "answer": "124"},
    # bad rows: no answer, an empty answer, and (below) a line that is not JSON
    {"question": "What is 5+5?"},
    {"question": "What is 1+1?", "answer": " "},
]

CODE = [
    {  # APPS/TACO convention: stdin/stdout
        "question": "Read two integers a and b from one line and print their sum.",
        "input_output": json.dumps({"inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7\n"]}),
    },
    {  # APPS/TACO convention: call-based
        "question": "Write a function add(a, b) that returns a + b.",
        "input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2], [5, 5]], "outputs": [3, 10]}),
    },
    {  # LiveCodeBench convention
        "question": "Read n and print n squared.",
        "test_cases": [{"input": "3\n", "output": "9\n", "testtype": "stdin"}],
    },
    {"question": "Print hello.", "input_output": "{not json"},  # bad: unparsable ground truth
    {"question": "Print the answer.", "ground_truth": {"language": "rust", "test_type": "stdin_stdout", "tests": []}},
]

IFEVAL = [  # Google IFEval's row layout: unused kwargs are None
    {
        "key": 1,
        "prompt": "Write a short poem about the sea. Your whole answer must be in lowercase letters.",
        "instruction_id_list": ["change_case:english_lowercase"],
        "kwargs": [{"num_words": None, "relation": None}],
    },
    {
        "key": 2,
        "prompt": "Describe a cat in at least 20 words.",
        "instruction_id_list": ["length_constraints:number_words"],
        "kwargs": [{"num_words": 20, "relation": "at least"}],
    },
    {  # bad: an instruction id IFEval does not have
        "key": 3,
        "prompt": "Answer in French.",
        "instruction_id_list": ["language:french_only"],
        "kwargs": [{}],
    },
]


def arithmetic_rows() -> list[dict]:
    seen, rows = set(), []
    for p in make_problems(1000, seed=7, task=ArithmeticTask(max_operand=5)):
        if p.question not in seen:
            seen.add(p.question)
            rows.append({"question": p.question, "answer": p.answer})
        if len(rows) == UNIQUE_ARITHMETIC:
            break
    # exact duplicates of two generated rows (case and spacing differ; exact dedup normalises them)
    first, second = rows[0], rows[1]
    return rows + [
        {"question": first["question"], "answer": first["answer"]},
        {"question": "  " + second["question"].lower().replace(" ", "  ") + " ", "answer": second["answer"]},
    ]


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)

    def jsonl(name: str, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
        path = out_dir / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))
        return path

    return [
        jsonl("arithmetic.jsonl", arithmetic_rows() + PLANTED_MATH, extra_lines=('{"question": "What is 2*2?", ',)),
        jsonl("code_example.jsonl", CODE),
        jsonl("ifeval_example.jsonl", IFEVAL),
        jsonl("eval_aime_style.jsonl", [{"problem": q} for q in EVAL]),
    ]


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "inputs"):
        print(path)
