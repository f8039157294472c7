"""`python -m am_rl.data distill` refuses what it cannot do before it contacts anything, and names a teacher that is
not answering (exit 2 and a message; no servers needed)."""

import pytest

from am_rl.data.__main__ import main
from am_rl.data.rows import write_rows

DEAD = "http://127.0.0.1:9"


@pytest.fixture
def queries(make_rows, tmp_path):
    path = tmp_path / "q.parquet"
    write_rows(make_rows([{"question": "What is 1+1?", "answer": "2"}]), path)
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--teacher-model", "b=m"], "name no --teacher: ['b']"),
        (["--ppl-url", DEAD], "--ppl-url needs --ppl-model"),
        (["--max-perplexity", "20"], "a perplexity threshold needs a scoring model"),
        (["--fix-ground-truth", "a"], "--fix-ground-truth needs a second teacher"),
        (["--teacher", "a=http://x:1"], "unique names"),
        (["--passes", "3"], "does not split into 3 equal passes"),
        ([], f"teacher a at {DEAD} is not answering"),
    ],
)
def test_refusals_exit_2_with_a_message(queries, tmp_path, capsys, extra, message):
    args = ["distill", str(queries), "-o", str(tmp_path / "sft.parquet"), "--teacher", f"a={DEAD}",
            "--tokenizer", "unused", "--reward-url", DEAD, "-k", "4", *extra]  # fmt: skip
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sft.distill_log.jsonl").exists(), "nothing was started"
