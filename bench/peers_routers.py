"""The routers compared by bench/peers.py (issue 9): ours, vLLM's ``vllm-router`` and SGLang's gateway ``smg``, each
started as its own process in front of the same workers, so each pays for its own CPU.

The peers come from ``.venv-bench`` (``scripts/setup_bench_venv.sh``), never from the package's dependencies.
Their settings are their defaults (what a user deploys) except: the Prometheus exporter port (both default to 29000,
so two would clash), and the policy.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.lb_overhead import free_port, process

REPO = Path(__file__).resolve().parents[1]
BENCH_BIN = REPO / ".venv-bench" / "bin"
READY_PATH = "/v1/models"  # every router answers it once it has its workers (smg registers them asynchronously)


@dataclass(frozen=True)
class Router:
    kind: str  # "ours", "vllm-router" or "smg"
    policy: str  # the router's own policy name
    options: tuple[str, ...] = ()  # extra command-line arguments

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.policy}" + (" " + " ".join(self.options) if self.options else "")

    def argv(self, port: int, workers: list[str]) -> list[str]:
        if self.kind == "ours":
            instances = [a for w in workers for a in ("--instance", w)]
            return [sys.executable, "-m", "load_balancer", "--port", str(port), "--policy", self.policy,
                    "--log-level", "warning", *instances, *self.options]  # fmt: skip
        binary = BENCH_BIN / self.kind
        if not binary.exists():
            raise SystemExit(f"{binary} is missing: run scripts/setup_bench_venv.sh first")
        common = ["--host", "127.0.0.1", "--port", str(port), "--worker-urls", *workers, "--policy", self.policy,
                  "--prometheus-port", str(free_port())]  # fmt: skip
        if self.kind == "vllm-router":
            return [str(binary), *common, "--log-level", "warning", *self.options]
        if self.kind == "smg":
            return [str(binary), "launch", *common, "--log-level", "warn", *self.options]
        raise ValueError(f"unknown router kind {self.kind!r}")


VLLM_ROUTER_POLICIES = ("power_of_two", "cache_aware", "sticky_least_loaded", "kv_aware")
SMG_POLICIES = ("power_of_two", "least_load", "cache_aware")


def makespan_routers(ours_options: tuple[str, ...] = ()) -> list[Router]:
    """Ours with and without migration, and every load-aware policy of each peer."""
    return [
        Router("ours", "makespan", ours_options),
        Router("ours", "makespan", ("--no-migrate", *ours_options)),
        *(Router("vllm-router", p) for p in VLLM_ROUTER_POLICIES),
        *(Router("smg", p) for p in SMG_POLICIES),
    ]


@contextmanager
def running(routers: list[Router], workers: list[str], logs: Path, timeout_s: float = 120.0):
    """Start every router in front of ``workers``; yield {name: url} for those that came up and {name: error} for
    those that did not (a peer policy may refuse this setup, which is a result, not a crash)."""
    urls: dict[str, str] = {}
    failed: dict[str, str] = {}
    with ExitStack() as stack:
        for r in routers:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = logs / f"{r.name.replace('/', '_').replace(' ', '_')}.log"
            try:
                stack.enter_context(process(r.argv(port, workers), url + READY_PATH, log, timeout_s))
            except RuntimeError as e:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
                failed[r.name] = f"{e}: {' | '.join(tail)}"
                print(f"{r.name}: did not start ({failed[r.name][:300]})", flush=True)
                continue
            urls[r.name] = url
        yield urls, failed
