"""Redis key layout shared by the server and the workers.

jobs: list, RPUSH by the server, LMOVE'd by a worker into its own processing list (the reliable-queue
pattern), so a job is always in exactly one list until its reply is pushed. workers: sorted set of worker id
-> last heartbeat (unix time); a worker whose heartbeat is older than the TTL is dead, and any process may move
its processing list back onto jobs.
"""

import hashlib
import json

from pydantic import BaseModel

from reward_server.config import WorkerSettings

PREFIX = "rs:"
JOBS = PREFIX + "jobs"
WORKERS = PREFIX + "workers"
REPLY_TTL_S = 3600  # an abandoned reply list (server gone) disappears after this

# Bump a type's version whenever its verifier may judge a response differently (extraction, comparison,
# harness, sandbox semantics): cached verdicts of the old version then stop matching.
VERIFIER_VERSIONS = {"math": "2", "code": "2", "ifeval": "1", "rm": "1"}
# The WorkerSettings fields that can change a type's verdict; they are part of its cache key. Every field is
# listed here or in NOT_VERDICT_SETTINGS (a test checks), so a new knob must be classified.
VERDICT_SETTINGS: dict[str, tuple[str, ...]] = {
    "math": ("math_timeout_s",),
    "code": (
        "code_test_timeout_s",
        "code_compile_timeout_s",
        "code_memory_mb",
        "code_compile_memory_mb",
        "code_max_procs",
        "code_max_file_mb",
        "code_tmpfs_mb",
    ),
    "ifeval": (),
    "rm": ("rm_backend", "rm_url", "rm_api", "rm_model"),
}
# Settings that never change a cached verdict: timeouts of backends whose failures are errors (never cached),
# and the service's own plumbing.
NOT_VERDICT_SETTINGS = ("rm_timeout_s", "max_attempts", "heartbeat_ttl_s", "cache_ttl_s")


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


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def verifier_fingerprint(reward_type: str, settings: WorkerSettings) -> str:
    """Hash of what, besides the item, decides a verdict of this type: its verifier version and settings."""
    judged_by = {name: getattr(settings, name) for name in VERDICT_SETTINGS[reward_type]}
    return _sha(_canonical({"version": VERIFIER_VERSIONS[reward_type], "settings": judged_by}))[:16]


def cache(item: BaseModel, settings: WorkerSettings) -> str:
    """(reward_type, verifier fingerprint, hash of response, hash of ground truth + prompt) of a ScoreItem."""
    ref = item.model_dump(mode="json", include={"ground_truth", "prompt"})
    fingerprint = verifier_fingerprint(item.reward_type, settings)
    return f"{PREFIX}cache:{item.reward_type}:{fingerprint}:{_sha(item.response)}:{_sha(_canonical(ref))}"
