import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest

from am_rl.vllm_servers import VLLMServerConfig, VLLMServerGroup, VLLMStartupError

pytestmark = pytest.mark.vllm


def processes_mentioning(needle: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_servers_generate_token_ids_and_expose_metrics_and_rl_endpoints(vllm_servers, tiny_model):
    assert len(set(vllm_servers.urls)) == 2
    for url in vllm_servers.urls:
        assert url.startswith("http://127.0.0.1:")
        body = {
            "model": str(tiny_model),
            "prompt": [1, 2, 3, 4],
            "max_tokens": 8,
            "temperature": 0,
            "ignore_eos": True,
            "return_token_ids": True,
        }
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert len(choice["token_ids"]) == 8 and choice["finish_reason"] == "length"
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
            assert name in metrics
        # VLLM_SERVER_DEV_MODE=1 exposes the RL endpoints the trainer needs for weight sync.
        assert httpx.post(f"{url}/pause", timeout=30).status_code == 200
        assert httpx.post(f"{url}/resume", timeout=30).status_code == 200


def test_startup_failure_raises_with_log_tail(tmp_path):
    cfg = VLLMServerConfig(model=str(tmp_path / "no-such-model"), log_dir=str(tmp_path), startup_timeout_s=300)
    group = VLLMServerGroup(cfg, num_servers=1)
    with pytest.raises(VLLMStartupError, match="exited with code") as info:
        group.start()
    assert "last lines" in str(info.value) and "no-such-model" in str(info.value)
    assert processes_mentioning(str(tmp_path / "no-such-model")) == []


def test_missing_vllm_python_is_a_clear_error(tmp_path):
    cfg = VLLMServerConfig(model="unused", python=str(tmp_path / "nope" / "python"))
    with pytest.raises(VLLMStartupError, match="make setup"):
        VLLMServerGroup(cfg, num_servers=1).start()


def test_no_orphans_when_the_parent_is_sigkilled(tiny_model, tmp_path):
    """A parent killed with SIGKILL cannot clean up; PR_SET_PDEATHSIG must take its healthy servers down."""
    marker = tmp_path / "urls"
    script = textwrap.dedent(
        f"""
        import signal
        from am_rl.vllm_servers import VLLMServerConfig, VLLMServerGroup
        group = VLLMServerGroup(VLLMServerConfig(model={str(tiny_model)!r}, log_dir={str(tmp_path)!r}), 1).start()
        open({str(marker)!r}, "w").write(" ".join(group.urls))
        signal.pause()
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert parent.poll() is None, "parent died before its server came up"
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(1)
    url = marker.read_text()
    port = url.rsplit(":", 1)[1]
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    (server_pid,) = processes_mentioning(f"--port {port}")
    tree = [psutil.Process(server_pid), *psutil.Process(server_pid).children(recursive=True)]
    assert len(tree) >= 2, "expected the API server and its engine process"

    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    _, alive = psutil.wait_procs(tree, timeout=60)
    assert alive == [], f"orphans left: {[p.pid for p in alive]}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=5)
