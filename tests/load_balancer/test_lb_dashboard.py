"""/dashboard in a real headless Chromium: the page renders every instance, and its numbers move while load runs
through the balancer (the page polls by itself; it is never reloaded)."""

import os
import threading
import time
from pathlib import Path

import httpx
import lb_test_policies  # noqa: F401  (registers test_move_after)
import pytest
from lb_chromium import Chromium, chromium_path

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="needs chromium: scripts/setup_system_lb.sh")

# Set to write the screenshot somewhere kept (docs/dashboard.png is made this way).
SCREENSHOT = os.environ.get("AM_RL_LB_DASHBOARD_SCREENSHOT")


def read_page(browser: Chromium) -> dict | None:
    """What the page shows; None while the navigation has not produced the dashboard yet."""
    return browser.evaluate(
        """!document.getElementById('t-rate') ? null : ({
          rows: [...document.querySelectorAll('#instances tr')].map(tr => [...tr.children].map(td => td.textContent)),
          rate: document.getElementById('t-rate').textContent,
          tokens: document.getElementById('t-tokens').textContent,
          requests: document.getElementById('t-requests').textContent,
          migrations: document.getElementById('t-migrations').textContent,
          updated: document.getElementById('updated').textContent,
          policy: document.getElementById('policy').textContent,
        })"""
    )


def test_dashboard_renders_and_updates_live(loadgens, balancer, tmp_path):
    gens = loadgens(3, tokens_per_s=300)
    # Everything shares one process here; on a loaded machine a loopback connect can wait seconds for the GIL.
    lb = balancer([g.url for g in gens], policy="test_move_after", policy_options={"after": 150},
                  migration_interval_s=0.1, api_key="k", connect_timeout_s=15, scrape_timeout_s=5)  # fmt: skip
    stop = threading.Event()

    def load():  # bounded: 4 client threads, each stops when the test is done
        with httpx.Client(timeout=30, headers={"Authorization": "Bearer k"}) as client:
            while not stop.is_set():
                body = {"model": "loadgen", "prompt": "x", "max_tokens": 400, "stream": True}
                client.post(f"{lb.url}/v1/completions", json=body)

    browser = Chromium()
    clients = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    try:
        browser.navigate(f"{lb.url}/dashboard?api_key=k")
        deadline = time.monotonic() + 20
        while (first := read_page(browser)) is None or len(first["rows"]) < 3 or first["updated"] == "never":
            assert time.monotonic() < deadline, f"dashboard never rendered: {first}"
            time.sleep(0.2)
        assert first["policy"] == "test_move_after"
        assert {row[0] for row in first["rows"]} == {g.url for g in gens}
        assert all(row[1] == "healthy" for row in first["rows"])
        for c in clients:
            c.start()
        deadline = time.monotonic() + 30
        while True:
            later = read_page(browser)
            busy = [row for row in later["rows"] if row[2] not in ("0", "")]
            if busy and float(later["rate"]) > 0 and int(later["migrations"]) > 0 and int(later["tokens"]) > 1000:
                break
            assert time.monotonic() < deadline, f"dashboard values never moved: {later}"
            time.sleep(0.3)
        assert later["updated"] != first["updated"] and int(later["requests"]) > int(first["requests"])
        time.sleep(2)  # let the chart gather a few points
        shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "dashboard.png"
        browser.screenshot(shot)
        assert shot.stat().st_size > 10_000
    finally:
        stop.set()
        browser.close()
        for c in clients:
            if c.is_alive():
                c.join(30)


def test_timeline_puts_neighbours_in_one_row_beyond_max_lanes(loadgens, balancer):
    """Three instances, at most two rows: the page draws two, the first naming its two instances; a step's
    occupancy shows in both."""
    from load_balancer.config import TimelineConfig

    gens = loadgens(3, tokens_per_s=300)
    lb = balancer([g.url for g in gens], policy="round_robin", timeline=TimelineConfig(max_lanes=2))
    body = {"model": "loadgen", "prompt": "x", "max_tokens": 60, "stream": True}
    with httpx.Client(timeout=30) as client:
        threads = [threading.Thread(target=client.post, args=(f"{lb.url}/v1/completions",), kwargs={"json": body})
                   for _ in range(6)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    browser = Chromium()
    try:
        browser.navigate(f"{lb.url}/dashboard")
        deadline = time.monotonic() + 20
        while True:
            rows = browser.evaluate("""[...document.querySelectorAll('#timeline g.lane')].map(g => ({
                label: g.querySelector('text').textContent, occupied: !!g.querySelector('path.occupancy')}))""")
            if rows:
                break
            assert time.monotonic() < deadline, "the timeline never drew the step"
            time.sleep(0.2)
        first = sorted(g.url for g in gens)[0].removeprefix("http://")
        assert len(rows) == 2 and rows[0]["label"].startswith(first) and rows[0]["label"].endswith("and 1 more")
        assert "more" not in rows[1]["label"] and all(row["occupied"] for row in rows)
    finally:
        browser.close()


def test_a_shards_dashboard_says_which_shard_it_is_and_which_engines_it_owns(loadgens, balancer):
    """One of several balancer processes (am_rl.balancer.processes) sees only its own engines; its page says so."""
    gens = loadgens(2)
    lb = balancer([g.url for g in gens], shard=2, shards=3)
    single = balancer([gens[0].url])
    browser = Chromium()
    try:
        browser.navigate(f"{lb.url}/dashboard")
        deadline = time.monotonic() + 20
        shard_line = "(e => e && !e.hidden ? e.textContent : '')(document.getElementById('shard'))"  # '' while loading
        while not (shown := browser.evaluate(shard_line)):
            assert time.monotonic() < deadline, "the shard line never appeared"
            time.sleep(0.2)
        assert shown.startswith("shard 2 of 3, owning 2 engine(s): ")
        assert all(g.url in shown for g in gens)
        assert browser.evaluate("document.title") == "am_rl load balancer, shard 2 of 3"

        browser.navigate(f"{single.url}/dashboard")  # one balancer process: no shard line at all
        deadline = time.monotonic() + 20
        while read_page(browser) is None or read_page(browser)["updated"] == "never":
            assert time.monotonic() < deadline, "dashboard never rendered"
            time.sleep(0.2)
        assert browser.evaluate("document.getElementById('shard').hidden") is True
    finally:
        browser.close()


def test_any_shard_shows_the_whole_run_merged_from_its_peers(loadgens, balancer):
    """/dashboard?view=all on one shard: every shard's engines and the summed totals, read from its peers over HTTP;
    a peer that stops answering is named, and the rest is still shown."""
    gens = loadgens(2, tokens_per_s=2000)
    two = balancer([gens[1].url], shard=2, shards=2, api_key="k")
    one = balancer([gens[0].url], shard=1, shards=2, api_key="k", peers=[two.url])
    auth = {"Authorization": "Bearer k"}
    for lb, n in ((one, 2), (two, 3)):
        for _ in range(n):
            body = {"model": "loadgen", "prompt": "x", "max_tokens": 5, "stream": True}
            assert httpx.post(f"{lb.url}/v1/completions", json=body, headers=auth, timeout=30).status_code == 200
    own = [httpx.get(f"{lb.url}/dashboard/data", headers=auth, timeout=10).json() for lb in (one, two)]
    merged = httpx.get(f"{one.url}/dashboard/all", headers=auth, timeout=10).json()
    assert merged["shard_of"] == {gens[0].url: 1, gens[1].url: 2} and merged["unreachable"] == {}
    assert {view["url"] for view in merged["instances"]} == {g.url for g in gens}
    for name in ("requests", "tokens_relayed", "migrations", "failovers"):
        assert merged["totals"][name] == own[0]["totals"][name] + own[1]["totals"][name], name
    assert merged["totals"]["requests"] == 5
    assert httpx.get(f"{one.url}/dashboard/all", timeout=10).status_code == 401  # the key guards it like the rest

    browser = Chromium()
    shard_line = "(e => e && !e.hidden ? e.textContent : '')(document.getElementById('shard'))"  # '' while loading

    def wait_for_line(predicate) -> str:
        deadline = time.monotonic() + 20
        while not predicate(shown := browser.evaluate(shard_line)):
            assert time.monotonic() < deadline, f"the shard line never showed it: {shown!r}"
            time.sleep(0.2)
        return shown

    try:
        browser.navigate(f"{one.url}/dashboard?api_key=k")
        assert wait_for_line(bool).endswith("The whole run: all shards")
        browser.evaluate("document.getElementById('view-all').click()")  # the shard's own page links the whole run
        assert wait_for_line(lambda text: text.startswith("all ")) == "all 2 shards, 2 engine(s)"
        assert browser.evaluate("document.title") == "am_rl load balancer, all 2 shards"
        page = read_page(browser)
        assert {row[0] for row in page["rows"]} == {f"{gens[0].url} (shard 1)", f"{gens[1].url} (shard 2)"}
        assert page["requests"] == "5"

        two_url = two.url
        two.stop()
        shown = wait_for_line(lambda text: "not answering" in text)
        assert shown.startswith(f"all 2 shards, 1 engine(s); not answering: {two_url} (")
        assert [row[0] for row in read_page(browser)["rows"]] == [f"{gens[0].url} (shard 1)"]
    finally:
        browser.close()
