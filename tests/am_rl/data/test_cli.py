"""`python -m am_rl.data` as a user runs it, on the shipped example (counts at every filter asserted)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from am_rl.data.__main__ import main
from am_rl.data.rows import read_rows

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "data_pipeline"
INPUTS = EXAMPLE / "inputs"


def cli(*args, check=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "am_rl.data", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


def test_shipped_inputs_are_what_the_generator_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_inputs", EXAMPLE / "make_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path in module.write(tmp_path):
        assert path.read_text() == (INPUTS / path.name).read_text(), f"{path.name}: rerun make_inputs.py"


def data_main(capsys, *args) -> tuple[int, str, str]:
    """The same CLI in-process (each subprocess pays ~10 s importing verl through am_rl)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_example_through_ingest_clean_and_stage2(tmp_path, capsys):
    cli("ingest", *(INPUTS / f for f in ("arithmetic.jsonl", "code_example.jsonl", "ifeval_example.jsonl")),
        "-o", tmp_path / "ingested.parquet")  # fmt: skip
    ingest = json.loads((tmp_path / "ingested.report.json").read_text())
    assert (ingest["rows_in"], ingest["rows_out"]) == (68, 62)
    assert sorted(d["row_id"] for d in ingest["dropped"]) == [
        "arithmetic:58", "arithmetic:59", "arithmetic:60", "code_example:4", "code_example:5", "ifeval_example:3",
    ]  # fmt: skip

    proc = cli("clean", tmp_path / "ingested.parquet", "-o", tmp_path / "cleaned.parquet",
               "--eval", INPUTS / "eval_aime_style.jsonl")  # fmt: skip
    assert "urls_images 58 -> exact_dedup 56 -> near_dedup 55 -> decontaminate 54" in proc.stdout
    cleaned = json.loads((tmp_path / "cleaned.report.json").read_text())
    assert cleaned["dropped_by_reason"] == {
        "url": 2, "image": 2, "exact_duplicate": 2, "near_duplicate": 1, "contaminated": 1,
    }  # fmt: skip
    assert {d["row_id"] for d in cleaned["dropped"] if d["reason"] == "contaminated"} == {"arithmetic:57"}
    assert len(read_rows(tmp_path / "cleaned.parquet")) == 54

    # Stage 2 from a stage-1 pass-rate log: two arithmetic queries solved 4/4, chat rows mixed in at 0.25.
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"row_id": f"arithmetic:{i}", "k": 4, "passes": 4}) + "\n" for i in (1, 2)))
    general = tmp_path / "general_chat.jsonl"
    general.write_text("".join(json.dumps({"question": f"Chat about {i}."}) + "\n" for i in range(40)))
    assert data_main(capsys, "ingest", general, "-o", tmp_path / "general_chat.parquet")[0] == 0
    mix = f"{tmp_path / 'general_chat.parquet'}=0.25"
    code, _, _ = data_main(capsys, "stage2", tmp_path / "cleaned.parquet", "--logs", log, "--mix", mix,
                           "-o", tmp_path / "stage2.parquet")  # fmt: skip
    assert code == 0
    stage2 = json.loads((tmp_path / "stage2.report.json").read_text())
    assert stage2["after"] == {"valid": 54, "unsolved": 52, "+general_chat": 65}
    assert len(read_rows(tmp_path / "stage2.parquet")) == 65


def test_bad_invocations_exit_2_with_a_message(tmp_path, capsys):
    code, _, err = data_main(capsys, "clean", tmp_path / "missing.parquet", "-o", tmp_path / "x.parquet")
    assert code == 2 and "no such parquet file" in err
    with pytest.raises(SystemExit) as exited:
        data_main(capsys, "select", tmp_path / "missing.parquet", "-o", tmp_path / "x.parquet")
    assert exited.value.code == 2 and "--balancer-url" in capsys.readouterr().err  # argparse names the missing flags
    (tmp_path / "only_bad.jsonl").write_text('{"question": "no answer"}\n')
    code, _, err = data_main(capsys, "ingest", tmp_path / "only_bad.jsonl", "--data-source", "math",
                             "-o", tmp_path / "o.parquet")  # fmt: skip
    assert code == 2 and "every row was dropped" in err
    report = json.loads((tmp_path / "o.report.json").read_text())
    assert report["dropped"][0]["row_id"] == "only_bad:1"


@pytest.mark.parametrize("bad", ["0.5", "x=y"])
def test_stage2_rejects_bad_mix_ratios(tmp_path, capsys, make_rows, bad):
    from am_rl.data.rows import write_rows

    write_rows(make_rows([{"question": "What is 1+1?", "answer": "2"}]), tmp_path / "s1.parquet")
    (tmp_path / "l.jsonl").write_text("")
    try:
        code, _, err = data_main(capsys, "stage2", tmp_path / "s1.parquet", "--logs", tmp_path / "l.jsonl",
                                 "--mix", bad, "-o", tmp_path / "o.parquet")  # fmt: skip
    except SystemExit as e:  # argparse: not KEY=VALUE
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and ("KEY=VALUE" in err or "could not convert" in err)
