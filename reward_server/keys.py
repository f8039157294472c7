"""Redis key layout shared by the server and the workers.

jobs: list, RPUSH by the server, LMOVE'd by a worker into its own processing list (the reliable-queue
pattern), so a job is always in exactly one list until its reply is pushed. workers: sorted set of worker id
-> last heartbeat (unix time); a worker whose heartbeat is older than the TTL is dead, and any process may move
its processing list back onto jobs.
"""

import hashlib
import json

from pydantic import BaseModel

PREFIX = "rs:"
JOBS = PREFIX + "jobs"
WORKERS = PREFIX + "workers"
REPLY_TTL_S = 3600  # an abandoned reply list (server gone) disappears after this


def processing(worker_id: str) -> str:
    return f"{PREFIX}processing:{worker_id}"


def attempts(job_id: str) -> str:
    return f"{PREFIX}attempts:{job_id}"


def inflight(request_id: str) -> str:
    """Set while a request waits; if it vanishes, Redis lost its data (restart, failover) and the jobs with it."""
    return f"{PREFIX}inflight:{request_id}"


def reply(request_id: str) -> str:
    return f"{PREFIX}reply:{request_id}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cache(item: BaseModel) -> str:
    """(reward_type, hash of response, hash of ground truth + prompt) of a ScoreItem."""
    ref = item.model_dump(mode="json", include={"ground_truth", "prompt"})
    ref_json = json.dumps(ref, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{PREFIX}cache:{item.reward_type}:{_sha(item.response)}:{_sha(ref_json)}"
