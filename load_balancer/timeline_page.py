"""The step-timeline section of ``/dashboard``: a table of the recent steps and, as SVG (so a test can read it), one
step drawn lane by lane. It polls ``/dashboard/timeline`` by itself; the step shown follows the newest one until a row
is clicked (clicking it again follows the newest again)."""

SECTION = """
<style>
 h2{font-size:16px;margin:22px 0 6px}
 #steps tr{cursor:pointer} #steps tr.selected td{background:#eef4ff}
 #timeline{background:#fff;border:1px solid #ddd;margin-top:10px;display:block}
 #timeline .lane-bg{fill:#f0f2f5} #timeline .occupancy{fill:#4c8bf5;fill-opacity:.8}
 #timeline .tail{fill:#cf222e;fill-opacity:.12} #timeline .tail-label{fill:#cf222e}
 #timeline .makespan{stroke:#222;stroke-width:2} #timeline .bound{stroke:#1a7f37;stroke-width:2;stroke-dasharray:6 4}
 #timeline .bound-label{fill:#1a7f37} #timeline .move{stroke-width:2;fill:none}
 #timeline .migration{stroke:#8250df} #timeline .failover{stroke:#d4700a}
 #timeline text{font:12px system-ui,sans-serif;fill:#333} #timeline .tick{stroke:#ccc}
 .legend span{margin-right:14px} .legend i{display:inline-block;width:18px;height:10px;margin-right:4px;vertical-align:middle}
</style>
<h2>Step timeline</h2>
<div class="sub" id="tl-caption">no step yet</div>
<div class="sub legend"><span><i style="background:#4c8bf5"></i>sequences in flight per instance</span>
 <span><i style="background:#f7dfe1"></i>tail</span><span><i style="background:#8250df;height:3px"></i>migration</span>
 <span><i style="background:#d4700a;height:3px"></i>failover</span><span><i style="background:#222;height:3px"></i>makespan</span>
 <span><i style="background:#1a7f37;height:3px"></i>lower bound: tokens / sum of the instances' peak rates</span></div>
<table><thead><tr><th>step</th><th>started</th><th>state</th><th>makespan</th><th>lower bound</th><th>makespan / bound</th>
<th>tail</th><th>requests</th><th>tokens</th><th>moves</th></tr></thead><tbody id="steps"></tbody></table>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="1200" height="0"></svg>
<script>
const tl = {selected: null};  // the step clicked; null: the newest
const tlUrl = () => "dashboard/timeline?" + new URLSearchParams({...(key ? {api_key: key} : {}),
  ...(tl.selected === null ? {} : {step: tl.selected})});
function svgEl(name, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
const hostOf = url => url.replace(/^https?:[/][/]/, "");
const shownStep = t => t.steps.find(s => s.detailed);
const ratioOf = s => s.lower_bound_s ? s.makespan_s / s.lower_bound_s : null;
const tailOf = s => s.tail_start_s === null ? null : s.makespan_s - s.tail_start_s;
function renderTimeline(t) {
  const shown = shownStep(t);
  document.getElementById("steps").replaceChildren(...t.steps.slice().reverse().map(s => {
    const tr = document.createElement("tr");
    tr.dataset.index = s.index;
    if (shown && s.index === shown.index) tr.className = "selected";
    const ratio = ratioOf(s), tail = tailOf(s);
    tr.append(cell("#" + s.index), cell(new Date(s.started_at * 1000).toLocaleTimeString()),
      cell(s.open ? "running" : "ended (" + s.closed_by + ")", s.open ? "up" : ""), cell(fmt(s.makespan_s, 2) + " s"),
      cell(s.lower_bound_s === null ? "–" : fmt(s.lower_bound_s, 2) + " s"), cell(ratio === null ? "–" : "×" + fmt(ratio, 2)),
      cell(tail === null ? "–" : fmt(tail, 2) + " s (" + fmt(100 * tail / s.makespan_s) + "%)"), cell(s.requests),
      cell(s.tokens), cell(s.moves_total));
    tr.onclick = () => { tl.selected = tl.selected === s.index ? null : s.index; };  // drawn at the next poll
    return tr;
  }));
  drawStep(shown, t.tail_fraction);
}
function drawStep(s, tailFraction) {
  const svg = document.getElementById("timeline"), caption = document.getElementById("tl-caption");
  if (!s) { svg.replaceChildren(); svg.setAttribute("height", 0); caption.textContent = "no step yet"; return; }
  const width = 1200, left = 300, right = 24, top = 30, laneH = 42, gap = 8, plotW = width - left - right;
  const height = top + s.lanes.length * (laneH + gap) + 28;
  svg.setAttribute("height", height); svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const end = s.makespan_s, span = Math.max(end, s.lower_bound_s || 0, 1e-3) * 1.04;
  const x = t => left + t / span * plotW, laneY = i => top + i * (laneH + gap);
  const row = Object.fromEntries(s.lanes.map((l, i) => [l.url, i]));
  const peak = Math.max(1, ...s.lanes.flatMap(l => l.points.map(p => p[1])));
  const defs = svgEl("defs", {});
  for (const kind of ["migration", "failover"]) {
    const m = svgEl("marker", {id: "arrow-" + kind, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7,
      markerHeight: 7, orient: "auto-start-reverse"});
    m.append(svgEl("path", {d: "M0,0 L10,5 L0,10 z", fill: kind === "migration" ? "#8250df" : "#d4700a"}));
    defs.append(m);
  }
  const kids = [defs];
  const lanesBottom = laneY(s.lanes.length) - gap;
  const pick = Math.max(span / 10, 1e-3), unit = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600]
    .find(u => u >= pick) || 7200;
  for (let t = 0; t <= span; t += unit)
    kids.push(svgEl("line", {class: "tick", x1: x(t), x2: x(t), y1: top - 4, y2: lanesBottom}),
      svgEl("text", {x: x(t), y: height - 8, "text-anchor": "middle"}, +t.toFixed(1) + " s"));
  s.lanes.forEach((lane, i) => {
    const g = svgEl("g", {class: "lane", "data-url": lane.url}), y0 = laneY(i), base = y0 + laneH;
    g.append(svgEl("rect", {class: "lane-bg", x: left, y: y0, width: plotW, height: laneH}));
    const pts = lane.points;
    let d = pts.length ? `M${x(pts[0][0])},${base}` : "", busy = 0, most = 0;
    pts.forEach(([t, n], k) => {
      const next = Math.min(k + 1 < pts.length ? pts[k + 1][0] : end, end), h = n / peak * (laneH - 4);
      d += ` L${x(t)},${base - h} L${x(next)},${base - h}`;
      if (n > 0) busy += next - t;
      most = Math.max(most, n);
    });
    if (d) g.append(svgEl("path", {class: "occupancy", d: d + ` L${x(end)},${base} Z`}));
    g.append(svgEl("text", {x: 8, y: y0 + 16}, hostOf(lane.url)));
    g.append(svgEl("text", {class: "lane-stats", x: 8, y: y0 + 33},
      `up to ${most} seq · busy ${fmt(busy, 1)} s · peak ${fmt(lane.peak_tokens_per_s)} tok/s`));
    kids.push(g);
  });
  if (s.tail_start_s !== null) {  // drawn over the lanes, translucent
    kids.push(svgEl("rect", {class: "tail", x: x(s.tail_start_s), y: top - 4, width: x(end) - x(s.tail_start_s),
      height: lanesBottom - top + 8}));
    kids.push(svgEl("text", {class: "tail-label", x: x(s.tail_start_s) + 3, y: top - 8}, "tail"));
  }
  for (const m of s.moves) {
    if (!(m.source in row) || !(m.target in row)) continue;
    const kind = m.migrated ? "migration" : "failover", down = row[m.target] > row[m.source];
    const y1 = laneY(row[m.source]) + laneH / 2, y2 = laneY(row[m.target]) + (down ? 4 : laneH - 4);
    const arrow = svgEl("line", {class: "move " + kind, x1: x(m.t_s), y1, x2: x(m.t_s) + 8, y2,
      "marker-end": `url(#arrow-${kind})`});
    arrow.append(svgEl("title", {}, `${kind} at ${fmt(m.t_s, 2)} s after ${m.tokens} tokens: ` +
      `${hostOf(m.source)} → ${hostOf(m.target)}`));
    kids.push(arrow);
  }
  kids.push(svgEl("line", {class: "makespan", x1: x(end), x2: x(end), y1: top - 14, y2: lanesBottom + 4}),
    svgEl("text", {x: x(end) - 4, y: top - 16, "text-anchor": "end"}, (s.open ? "so far " : "makespan ") + fmt(end, 2) + " s"));
  if (s.lower_bound_s !== null)
    kids.push(svgEl("line", {class: "bound", x1: x(s.lower_bound_s), x2: x(s.lower_bound_s), y1: top - 4, y2: lanesBottom + 4}),
      svgEl("text", {class: "bound-label", x: x(s.lower_bound_s) - 4, y: lanesBottom + 16, "text-anchor": "end"},
        "lower bound " + fmt(s.lower_bound_s, 2) + " s"));
  svg.replaceChildren(...kids);
  const ratio = ratioOf(s), tail = tailOf(s);
  caption.textContent = `step #${s.index} (${s.open ? "running" : "ended"}) · makespan ${fmt(end, 2)} s` +
    (ratio === null ? "" : ` vs lower bound ${fmt(s.lower_bound_s, 2)} s (×${fmt(ratio, 2)})`) +
    (tail === null ? "" : ` · tail: last ${fmt(tail, 2)} s with ≤ ${Math.max(1, Math.floor(tailFraction * s.peak_in_flight))}` +
      ` of ${s.peak_in_flight} sequences in flight`) + ` · moves: ${s.moves_total}`;
}
async function pollTimeline() {
  try { const r = await fetch(tlUrl(), {cache: "no-store"}); if (r.ok) renderTimeline(await r.json()); }
  catch (e) { document.getElementById("tl-caption").textContent = "unreachable"; }
  setTimeout(pollTimeline, 500);
}
pollTimeline();
</script>
"""
