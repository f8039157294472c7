"""Push the trainer's weights into running vLLM servers through vLLM's RL weight-update API.

The data plane is a safetensors file (in /dev/shm when it exists) read by the ``am_rl_file`` engine of our vLLM
plugin (``vllm_plugin/``); the control plane is vLLM's own endpoints. Per push and server:
``/pause?mode=wait`` (a push during a forward step crashes the worker) → ``/start_weight_update`` →
``/update_weights`` → ``/finish_weight_update {weight_version}`` → ``/reset_prefix_cache`` (KV cached under the
old weights would silently change outputs) → ``/resume``, then ``/weight_info`` must report the new version.

A server that fails any part of a push (dead, or left half-loaded by a failed ``/update_weights``) must never serve
again with other weights than the rest: the pusher drops it, returns it to the caller (who takes it out of the
balancer) and stops pushing to it. A push that leaves no server raises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

import httpx
import torch
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

BACKEND = "am_rl_file"  # the engine name registered by vllm_plugin/am_rl_vllm_plugin
SERVER_ARGS = ["--weight-transfer-config", '{"backend": "%s"}' % BACKEND]  # add to VLLMServerConfig.extra_args


class WeightSyncError(RuntimeError):
    """A push failed on every server; the message names each server and its error."""


class WeightPusher:
    """Pushes state dicts to a set of vLLM servers, dropping any that fails; one instance per training run."""

    def __init__(
        self,
        urls: Sequence[str],
        timeout_s: float = 300.0,  # per call; a 32B push through a file takes minutes
        connect_timeout_s: float = 10.0,  # a dead server refuses at once; a hung host must not hang the step
        scratch_dir: str | None = None,
    ):
        self.urls = list(urls)
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        base = scratch_dir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
        self._dir = Path(tempfile.mkdtemp(prefix="am_rl-weights-", dir=base))
        self._initialized: set[str] = set()  # servers whose transfer engine is initialised
        self.last_push_s = 0.0

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _post(self, http: httpx.AsyncClient, url: str, path: str, **kwargs) -> httpx.Response:
        r = await http.post(f"{url}{path}", **kwargs)
        if r.status_code != 200:
            raise WeightSyncError(f"{url}{path} answered HTTP {r.status_code}: {r.text[:500]}")
        return r

    async def _push_one(self, http: httpx.AsyncClient, url: str, path: Path, version: str) -> None:
        if url not in self._initialized:
            await self._post(http, url, "/init_weight_transfer_engine", json={"init_info": {}})
            self._initialized.add(url)
        await self._post(http, url, "/pause", params={"mode": "wait"})
        try:
            await self._post(http, url, "/start_weight_update")
            await self._post(http, url, "/update_weights", json={"update_info": {"path": str(path)}})
            await self._post(http, url, "/finish_weight_update", json={"weight_version": version})
            await self._post(http, url, "/reset_prefix_cache")
        finally:
            await self._post(http, url, "/resume")
        reported = (await http.get(f"{url}/weight_info")).json().get("weight_version")
        if reported != version:
            raise WeightSyncError(f"{url} reports weight_version {reported!r} after pushing {version!r}")

    async def push(self, state_dict: Mapping[str, torch.Tensor], version: str) -> list[str]:
        """Push ``state_dict`` (Hugging Face names) to every server; return the servers dropped by this push."""
        start = time.monotonic()
        path = self._dir / f"{version}.safetensors"
        # contiguous(): safetensors refuses views; detach+cpu: the trainer's tensors may require grad.
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(path))
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                results = await asyncio.gather(
                    *(self._push_one(http, url, path, version) for url in self.urls), return_exceptions=True
                )
        finally:
            path.unlink(missing_ok=True)
        failed = {url: r for url, r in zip(self.urls, results, strict=True) if isinstance(r, BaseException)}
        if len(failed) == len(self.urls):
            raise WeightSyncError(
                f"weight push {version} failed on every server:\n" + "\n".join(f"{u}: {e!r}" for u, e in failed.items())
            )
        for url, error in failed.items():
            logger.error("weight push %s: dropping %s, which can no longer serve this policy: %r", version, url, error)
        self.urls = [url for url in self.urls if url not in failed]
        self.last_push_s = time.monotonic() - start
        logger.info("pushed weights %s to %d servers in %.3fs", version, len(self.urls), self.last_push_s)
        return list(failed)
