/**
 * The dashboard's one page: inline style and script, nothing loaded from elsewhere. Everything a
 * sandbox controls (hosts, paths, binaries, reasons) reaches the page as data and is put in with
 * `textContent`, never as HTML: an agent cannot script the operator's browser. The token comes
 * from the address `carapace dashboard` printed; the page keeps it for the tab (sessionStorage)
 * and takes it out of the address bar.
 */
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Carapace</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
header{background:#1d2430;color:#fff;padding:10px 18px;font-weight:600;display:flex;gap:16px;align-items:baseline}
header small{font-weight:400;opacity:.7}
main{display:grid;grid-template-columns:1fr 1fr;gap:14px;padding:14px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:10px 12px;min-width:0}
section.wide{grid-column:1/3}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:#5a6473;margin:0 0 8px}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eef0f3;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:28em}
th{font-weight:600;color:#5a6473;font-size:12px}
.denied{color:#b42318}.allowed{color:#067647}.risk{color:#b54708;font-size:12px}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;border:1px solid}.badge.denial{color:#5a6473;border-color:#c9ced6}.badge.agent{color:#6941c6;border-color:#6941c6;background:#f4f3ff}
.rationale{color:#6941c6;font-size:12px;white-space:normal}
button{font:inherit;padding:2px 10px;margin-right:4px;border-radius:4px;border:1px solid #98a2b3;background:#fff;cursor:pointer}
button.approve{border-color:#067647;color:#067647}button.reject{border-color:#b42318;color:#b42318}
#decisions{max-height:260px;overflow:auto;font-family:ui-monospace,monospace;font-size:12px}
.chart{display:inline-block;margin:0 16px 8px 0}.chart svg{background:#fafbfc;border:1px solid #eef0f3}
.legend{font-size:12px;color:#5a6473}
</style></head>
<body>
<header>Carapace <small id="status">connecting…</small></header>
<main>
<section class="wide"><h2>Sandboxes</h2><table id="sandboxes"><thead><tr><th>Name</th><th>State</th><th>Restarts</th><th>CPU</th><th>Memory</th><th>Policy</th><th>Updated</th><th>Forwarded ports</th></tr></thead><tbody></tbody></table></section>
<section class="wide"><h2>Pending proposals</h2><table id="proposals"><thead><tr><th>ID</th><th>Sandbox</th><th>From</th><th>Denied</th><th>Binary</th><th>Hits</th><th>Rule</th><th></th></tr></thead><tbody></tbody></table><p id="no-proposals" class="legend">none</p></section>
<section><h2>Requests and denials (30 min)</h2><div id="charts"></div><div class="legend"><span class="allowed">— requests</span> &nbsp; <span class="denied">— denials</span></div></section>
<section><h2>Decisions</h2><div id="decisions"></div></section>
</main>
<script>
"use strict";
const given = new URLSearchParams(location.search).get("token");
if (given) { sessionStorage.setItem("carapace-token", given); history.replaceState(null, "", "/"); }
const token = given || sessionStorage.getItem("carapace-token") || "";
const headers = { Authorization: "Bearer " + token };
const $ = (id) => document.getElementById(id);
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); if (cls) e.className = cls; return e; }
function row(cells) { const tr = document.createElement("tr"); for (const c of cells) { const td = document.createElement("td"); if (c instanceof Node) td.appendChild(c); else td.textContent = String(c); tr.appendChild(td); } return tr; }
async function api(path, method) {
  const r = await fetch(path, { method: method || "GET", headers });
  if (!r.ok) throw new Error((await r.json()).error?.message || r.status);
  return r.json();
}
let series = { bucketMs: 10000, start: 0, sandboxes: [] };
const proposals = new Map();
// Where a proposal came from (as term/model.ts, proposalOrigin): a refused request, the agent's own
// suggestion through policy.local, or a refusal the agent then asked about.
function origin(p) { return p.source === "agent" ? "agent" : p.rationale ? "denial+agent" : "denial"; }
function originCell(p) {
  const o = origin(p), cell = document.createElement("div");
  const badge = el("span", o, "badge " + (o === "denial" ? "denial" : "agent"));
  badge.title = o === "denial" ? "the policy refused what the agent did" : "the agent asked for this through policy.local";
  cell.appendChild(badge);
  if (p.rationale) cell.appendChild(el("div", "the agent says: " + p.rationale, "rationale"));
  return cell;
}
function denied(p) { return p.level === "request" ? p.method + " " + p.host + ":" + p.port + " " + (p.pathPattern || "") : "connect " + p.host + ":" + p.port; }
// CPU is a share of one core between two readings of a sandbox's CPU seconds (the list, every 5 s).
const cpuSeen = new Map();
function bytes(n) { const u = ["B", "K", "M", "G", "T"]; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)) + u[i]; }
function cpuOf(s, now) {
  if (!s.usage) return "-";
  const key = s.owner + "/" + s.name, before = cpuSeen.get(key);
  cpuSeen.set(key, { at: now, cpu: s.usage.cpuSeconds });
  if (!before || now <= before.at || s.usage.cpuSeconds < before.cpu) return "…";
  return Math.round((s.usage.cpuSeconds - before.cpu) * 100000 / (now - before.at)) + "%";
}
function renderSandboxes(list) {
  const body = $("sandboxes").tBodies[0]; body.replaceChildren();
  const now = Date.now();
  // Readings of sandboxes no longer listed are forgotten.
  const listed = new Set(list.map((s) => s.owner + "/" + s.name));
  for (const key of cpuSeen.keys()) if (!listed.has(key)) cpuSeen.delete(key);
  for (const s of list) {
    const links = document.createElement("span");
    for (const f of s.forwards) { const a = el("a", "127.0.0.1:" + f.hostPort + " → " + f.sandboxPort); a.href = "http://127.0.0.1:" + f.hostPort + "/"; a.rel = "noopener noreferrer"; a.target = "_blank"; links.appendChild(a); links.appendChild(document.createTextNode(f.reason ? " (not listening: " + f.reason + ") " : " ")); }
    const tr = row([s.name, s.restartAt ? "restarting" : s.state, s.restarts, cpuOf(s, now), s.usage ? bytes(s.usage.memoryBytes) : "-", "rev " + s.policyRev, s.updatedAt.replace("T", " ").replace(/\\..*/, ""), links]);
    tr.dataset.sandbox = s.name; body.appendChild(tr);
  }
}
function renderProposals() {
  const body = $("proposals").tBodies[0]; body.replaceChildren();
  const list = [...proposals.values()].sort((a, b) => b.id - a.id);
  $("no-proposals").hidden = list.length > 0;
  for (const p of list) {
    const approve = el("button", "Approve", "approve"); approve.dataset.id = p.id;
    approve.onclick = () => decide(p.id, "approve");
    const reject = el("button", "Reject", "reject"); reject.dataset.id = p.id;
    reject.onclick = () => decide(p.id, "reject");
    const rule = document.createElement("div"); rule.appendChild(el("div", p.rule ? p.rule.summary : "(allowed now)"));
    for (const r of p.risks) rule.appendChild(el("div", "⚠ " + r, "risk"));
    const buttons = document.createElement("span"); buttons.append(approve, reject);
    const tr = row([p.id, p.sandbox, originCell(p), denied(p), p.binary || "?", p.hits, rule, buttons]);
    tr.dataset.proposal = p.id; body.appendChild(tr);
  }
}
async function decide(id, how) {
  try { const r = await api("/api/proposals/" + id + "/" + how, "POST"); proposals.delete(id); renderProposals(); $("status").textContent = how === "approve" ? "proposal " + id + " approved" + (r.revision ? " (policy revision " + r.revision + ")" : "") : "proposal " + id + " rejected"; }
  catch (e) { $("status").textContent = String(e.message || e); }
}
function renderCharts() {
  const box = $("charts"); box.replaceChildren();
  const W = 300, H = 80, NS = "http://www.w3.org/2000/svg";
  for (const s of series.sandboxes) {
    const div = el("div", undefined, "chart"); div.dataset.sandbox = s.name; div.appendChild(el("div", s.name));
    const svg = document.createElementNS(NS, "svg"); svg.setAttribute("width", W); svg.setAttribute("height", H);
    const max = Math.max(1, ...s.requests);
    for (const [values, color, name] of [[s.requests, "#067647", "requests"], [s.denials, "#b42318", "denials"]]) {
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", values.map((v, i) => (i * W / (values.length - 1)).toFixed(1) + "," + (H - 4 - v * (H - 8) / max).toFixed(1)).join(" "));
      line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "1.5"); line.dataset.series = name;
      svg.appendChild(line);
    }
    div.appendChild(svg); div.appendChild(el("div", s.requests.reduce((a, b) => a + b, 0) + " requests, " + s.denials.reduce((a, b) => a + b, 0) + " denials", "legend"));
    box.appendChild(div);
  }
}
// The chart's window moves on with time, a bucket at a time, whether or not anything happens; a
// decision is counted in the bucket of its own time (series.start is the first bucket's).
const BUCKETS = 180;
function advance(t) {
  const steps = Math.floor((t - series.start) / series.bucketMs) - (BUCKETS - 1);
  if (steps <= 0) return;
  const n = Math.min(steps, BUCKETS), zeros = new Array(n).fill(0);
  for (const s of series.sandboxes) { s.requests = s.requests.slice(n).concat(zeros); s.denials = s.denials.slice(n).concat(zeros); }
  series.start += steps * series.bucketMs;
}
function count(d) {
  advance(d.t);
  const i = Math.floor((d.t - series.start) / series.bucketMs);
  if (i < 0 || i >= BUCKETS) return;
  let s = series.sandboxes.find((x) => x.name === d.sandbox && x.owner === d.owner);
  if (!s) { s = { name: d.sandbox, owner: d.owner, requests: new Array(BUCKETS).fill(0), denials: new Array(BUCKETS).fill(0) }; series.sandboxes.push(s); }
  s.requests[i]++; if (!d.allowed) s.denials[i]++;
}
function addDecision(d) {
  const line = el("div", new Date(d.t).toLocaleTimeString() + " " + d.sandbox + " " + (d.allowed ? "allowed" : "DENIED") + " " + (d.level === "request" ? d.method + " " + d.host + ":" + d.port + (d.path || "") : "connect " + d.host + ":" + d.port) + (d.binary ? " by " + d.binary : ""), d.allowed ? "allowed" : "denied");
  line.className += " decision"; $("decisions").prepend(line);
  while ($("decisions").childElementCount > 200) $("decisions").lastChild.remove();
  count(d); renderCharts();
}
async function load() {
  const [sbs, props, ser] = await Promise.all([api("/api/sandboxes"), api("/api/proposals"), api("/api/series")]);
  renderSandboxes(sbs); proposals.clear(); for (const p of props) proposals.set(p.id, p); renderProposals(); series = ser; renderCharts();
}
function connect() {
  const es = new EventSource("/api/events?token=" + encodeURIComponent(token));
  es.onopen = () => { $("status").textContent = "live"; document.body.dataset.live = "1"; };
  // A restarted gateway listens on another port and has forgotten the token: this page cannot
  // come back by itself, so say what brings it back.
  es.onerror = () => { $("status").textContent = "reconnecting… (if the gateway restarted, carapace dashboard prints its new address)"; document.body.dataset.live = ""; };
  es.onmessage = (m) => {
    const e = JSON.parse(m.data);
    if (e.type === "decision") addDecision(e);
    else if (e.type === "proposal") { if (e.proposal.status === "pending") proposals.set(e.proposal.id, e.proposal); else proposals.delete(e.proposal.id); renderProposals(); }
    else if (e.type === "sandbox") api("/api/sandboxes").then(renderSandboxes, () => {});
  };
}
load().then(connect, (e) => { $("status").textContent = String(e.message || e); });
setTimeout(() => api("/api/sandboxes").then(renderSandboxes, () => {}), 1000);
setInterval(() => api("/api/sandboxes").then(renderSandboxes, () => {}), 5000);
setInterval(() => { if (series.start > 0) { advance(Date.now()); renderCharts(); } }, 10000);
</script></body></html>
`;
