"""verl-compatible scoring functions backed by the remote reward service.

    compute_score(data_source, solution_str, ground_truth, extra_info=None) -> dict  # verl's default signature
    compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos) -> list[dict]  # BatchRewardManager

The service URL and the data_source table come from `configure(...)` (the trainer calls it once at startup
from its Hydra config) or, for processes that never saw that call (Ray workers), from the environment:
AM_RL_REWARD_URL and AM_RL_REWARD_TABLE (a JSON object of glob -> reward_type).
"""

import json
import os
from typing import Any, Mapping, Sequence

from am_rl.rewards.client import RewardClient, RewardClientConfig
from am_rl.rewards.routing import RewardRouter
from reward_server.types import ScoreResult

_state: dict[str, Any] = {}


def configure(url: str | None = None, table: Mapping[str, str] | None = None, **client_options: Any) -> None:
    config = RewardClientConfig(url=url or os.environ.get("AM_RL_REWARD_URL", RewardClientConfig.url), **client_options)
    _state["client"] = RewardClient(config)
    _state["router"] = RewardRouter(table)


def _ensure_configured() -> tuple[RewardClient, RewardRouter]:
    if not _state:
        table = os.environ.get("AM_RL_REWARD_TABLE")
        configure(table=json.loads(table) if table else None)
    return _state["client"], _state["router"]


def _as_verl(result: ScoreResult, reward_type: str) -> dict[str, Any]:
    return {"score": float(result.score), "reward_type": reward_type, "status": result.status, "cached": result.cached}


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping | None = None, **_: Any
) -> dict[str, Any]:
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping | None] | None = None,
    **_: Any,
) -> list[dict[str, Any]]:
    client, router = _ensure_configured()
    extra_infos = extra_infos if extra_infos is not None else [None] * len(data_sources)
    items = [router.item(*args) for args in zip(data_sources, solution_strs, ground_truths, extra_infos)]
    results = client.score_batch_sync(items)
    return [_as_verl(r, item["reward_type"]) for r, item in zip(results, items)]
