"""``/dashboard``: a self-contained live page (no external assets: clusters often have no internet) polling
``/dashboard/data`` and ``/dashboard/timeline`` twice a second. ``/dashboard?view=all`` on a shard polls
``/dashboard/all`` instead: the whole run, merged from the shard's peers (load_balancer/cluster_view.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from load_balancer.cluster_view import cluster_snapshot
from load_balancer.timeline_page import SECTION as TIMELINE_SECTION
from load_balancer.types import ClusterSnapshot, DashboardSnapshot, TimelineSnapshot

router = APIRouter()

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>am_rl load balancer</title>
<style>
 body{font:14px system-ui,sans-serif;margin:20px;background:#f7f7f9;color:#222}
 h1{font-size:20px;margin:0 0 4px} .sub{color:#666;margin-bottom:14px}
 .totals{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:14px}
 .card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:110px}
 .card b{display:block;font-size:20px}
 table{border-collapse:collapse;background:#fff;width:100%}
 th,td{border:1px solid #ddd;padding:5px 8px;text-align:right} th{background:#eee} td:first-child{text-align:left}
 .up{color:#1a7f37;font-weight:600} .down{color:#cf222e;font-weight:600} .drain{color:#9a6700;font-weight:600}
 .bar{display:inline-block;height:8px;background:#4c8bf5;vertical-align:middle;margin-right:4px}
 canvas{background:#fff;border:1px solid #ddd;margin-top:14px}
</style></head><body>
<h1>am_rl load balancer</h1>
<div class="sub">policy <span id="policy">?</span> &middot; updated <span id="updated">never</span></div>
<div class="sub" id="shard" hidden></div>
<div class="totals">
 <div class="card">tokens/s<b id="t-rate">0</b></div>
 <div class="card">in flight<b id="t-inflight">0</b></div>
 <div class="card">requests<b id="t-requests">0</b></div>
 <div class="card">tokens relayed<b id="t-tokens">0</b></div>
 <div class="card">migrations<b id="t-migrations">0</b></div>
 <div class="card">failovers<b id="t-failovers">0</b></div>
 <div class="card">ejections<b id="t-ejections">0</b></div>
</div>
<table><thead><tr><th>instance</th><th>health</th><th>in flight</th><th>running</th><th>waiting</th>
<th>tokens/s</th><th>KV cache</th><th>remaining tokens</th><th>time to drain</th><th>migrations in/out</th>
<th>scrape age</th></tr></thead><tbody id="instances"></tbody></table>
<canvas id="chart" width="900" height="220"></canvas>
<script>
const params = new URLSearchParams(location.search), key = params.get("api_key");
const dataUrl = (params.get("view") === "all" ? "dashboard/all" : "dashboard/data") +
  (key ? "?api_key=" + encodeURIComponent(key) : "");
const history = [];  // [time, tokens/s], last 120 polls
const fmt = (x, d=0) => x === null || x === undefined ? "–" : Number(x).toFixed(d);
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
function render(s) {
  document.getElementById("policy").textContent = s.policy;
  document.getElementById("updated").textContent = new Date(s.now * 1000).toLocaleTimeString();
  const shard = document.getElementById("shard");
  if (s.shard_of) {  // the whole run, merged by this shard from its peers
    const missing = Object.entries(s.unreachable).map(([url, why]) => url + " (" + why + ")");
    shard.hidden = false;
    shard.textContent = "all " + s.shards + " shards, " + s.instances.length + " engine(s)" +
      (missing.length ? "; not answering: " + missing.join(", ") : "");
    document.title = "am_rl load balancer, all " + s.shards + " shards";
  } else if (s.shards > 1) {  // one of several balancer processes: it sees only its own engines
    shard.hidden = false;
    shard.textContent = "shard " + s.shard + " of " + s.shards + ", owning " + s.instances.length + " engine(s): " +
      (s.instances.map(i => i.url).join(", ") || "none yet") + ". ";
    if (s.peers.length) {
      const all = document.createElement("a");
      all.href = "?view=all" + (key ? "&api_key=" + encodeURIComponent(key) : "");
      all.id = "view-all";
      all.textContent = "The whole run: all shards";
      shard.append(all);
    } else shard.append("The other shards' engines are on their own dashboards.");
    document.title = "am_rl load balancer, shard " + s.shard + " of " + s.shards;
  }
  const t = s.totals;
  for (const [id, v] of [["t-rate", fmt(t.tokens_per_s, 1)], ["t-inflight", t.in_flight], ["t-requests", t.requests],
      ["t-tokens", t.tokens_relayed], ["t-migrations", t.migrations], ["t-failovers", t.failovers], ["t-ejections", t.ejections]])
    document.getElementById(id).textContent = v;
  const body = document.getElementById("instances");
  body.replaceChildren(...s.instances.map(i => {
    const tr = document.createElement("tr");
    tr.dataset.url = i.url;
    const health = i.draining ? ["draining", "drain"] : i.paused ? ["paused", "drain"] : i.healthy ? ["healthy", "up"] : ["ejected", "down"];
    const kv = cell(""); const bar = document.createElement("span"); bar.className = "bar";
    bar.style.width = Math.round(60 * i.kv_cache_usage) + "px"; kv.append(bar, fmt(100 * i.kv_cache_usage, 1) + "%");
    tr.append(cell(i.url + (s.shard_of ? " (shard " + s.shard_of[i.url] + ")" : "")), cell(...health), cell(i.in_flight), cell(i.running), cell(i.waiting), cell(fmt(i.tokens_per_s, 1)),
      kv, cell(fmt(i.remaining_tokens)), cell(i.drain_s === null ? "–" : fmt(i.drain_s, 1) + " s"),
      cell(i.migrations_in + " / " + i.migrations_out), cell(i.last_scrape_age_s === null ? "never" : fmt(i.last_scrape_age_s, 2) + " s"));
    return tr;
  }));
  history.push([s.now, t.tokens_per_s]); if (history.length > 120) history.shift();
  draw();
}
function draw() {
  const c = document.getElementById("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const top = Math.max(1, ...history.map(h => h[1])) * 1.1;
  g.fillStyle = "#666"; g.font = "12px sans-serif";
  g.fillText("tokens/s (max " + top.toFixed(0) + ")", 8, 14);
  g.strokeStyle = "#4c8bf5"; g.lineWidth = 2; g.beginPath();
  history.forEach(([_, v], k) => {
    const x = 8 + k * (c.width - 16) / 119, y = c.height - 8 - v / top * (c.height - 30);
    k ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
}
async function poll() {
  try { const r = await fetch(dataUrl, {cache: "no-store"}); if (r.ok) render(await r.json()); }
  catch (e) { document.getElementById("updated").textContent = "unreachable"; }
  setTimeout(poll, 500);
}
poll();
</script>
"""
PAGE += TIMELINE_SECTION + "</body></html>\n"


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    return HTMLResponse(PAGE)


@router.get("/dashboard/data", response_model=DashboardSnapshot)
async def dashboard_data(request: Request) -> DashboardSnapshot:
    return request.app.state.balancer.snapshot()


@router.get("/dashboard/all", response_model=ClusterSnapshot)
async def dashboard_all(request: Request) -> ClusterSnapshot:
    balancer = request.app.state.balancer
    return await cluster_snapshot(balancer.snapshot(), balancer.session, balancer.cfg.api_key)


@router.get("/dashboard/timeline", response_model=TimelineSnapshot)
async def dashboard_timeline(request: Request, step: int | None = None) -> TimelineSnapshot:
    return request.app.state.balancer.timeline.snapshot(detail=step)
