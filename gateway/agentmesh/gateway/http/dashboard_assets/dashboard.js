// agentmesh dashboard: plain DOM, no dependencies. Pages are chosen by the URL's hash:
// #agents, #jobs, #job/ID, #workflows, #traces, #trace/ID. Data comes from ./api/...;
// ./events pushes the agents' status (server-sent events).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
let agentsStream = null;
let jobStream = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const trimmed = (name, prefix) => (name || "").replace(prefix, "");
const statusClass = (status) => "status-" + status;
const clock = (ms) => new Date(ms).toLocaleTimeString();

class Refused extends Error {}

async function api(path) {
  const response = await fetch("api/" + path, { credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) {
    showLogin((body.error && body.error.message) || response.statusText);
    throw new Refused(response.statusText);
  }
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

function showError(error) {
  if (error instanceof Refused) return;
  const box = $("#error");
  box.textContent = String(error.message || error);
  box.hidden = false;
}

function showLogin(reason) {
  document.querySelectorAll(".page").forEach((page) => { page.hidden = true; });
  $("#login-reason").textContent = reason;
  $("#login").hidden = false;
}

// -- agents ---------------------------------------------------------------------

function millis(ms) {
  if (ms === null || ms === undefined) return "\u2013";
  if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
  return (ms < 10 ? ms.toFixed(2) : ms.toFixed(1)) + " ms";
}

function lasting(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  return s % 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s / 60} min`;
}

function recentCells(recent) {
  // The agent's calls over the window: error rate of the agent's own failures, latency
  // quantiles from the gateway's duration histogram (see the window note above the table).
  const r = recent || {};
  const codes = Object.entries(r.codes || {}).map(([code, n]) => `${code} ${n}`).join(", ");
  const rate = r.error_rate === null || r.error_rate === undefined
    ? "\u2013" : (r.error_rate * 100).toFixed(r.error_rate && r.error_rate < 0.1 ? 1 : 0) + " %";
  return [
    el("td", { class: "calls num", title: codes || "no calls" }, `${r.calls || 0}`,
      r.rejected ? el("div", { class: "muted" }, `${r.rejected} refused`) : "",
      r.caller_errors ? el("div", { class: "muted" }, `${r.caller_errors} caller errors`) : ""),
    el("td", { class: "error-rate num" + (r.errors ? " status-ERROR" : ""),
      title: r.errors ? `${r.errors} of ${r.calls} calls failed` : "" }, rate),
    el("td", { class: "p50 num", title: r.mean_ms ? `mean ${millis(r.mean_ms)}` : "" }, millis(r.p50_ms)),
    el("td", { class: "p99 num" }, millis(r.p99_ms)),
  ];
}

function agentRow(agent) {
  const status = trimmed(agent.status, "AGENT_STATUS_") || "UNSPECIFIED";
  const breaker = agent.breaker || {};
  const breakerState = trimmed(breaker.state, "BREAKER_STATE_") || "CLOSED";
  const card = agent.card || {};
  const replicas = (agent.replicas || []).map((replica) =>
    el("div", { class: "mono" }, replica.address,
      replica.ejected ? el("span", { class: "status-OPEN" }, " ejected") : "",
      replica.consecutive_failures
        ? el("span", { class: "muted" }, ` ${replica.consecutive_failures} failed in a row`) : "",
      replica.in_flight ? ` (${replica.in_flight} in flight)` : ""));
  const skills = (card.skills || []).map((skill) =>
    el("span", { class: "skill", title: skill.description || "" }, skill.id || skill.name));
  return el("tr", { dataset: { agent: agent.name } },
    el("td", {}, el("strong", {}, agent.name), agent.protocol ? el("div", { class: "muted" }, agent.protocol) : ""),
    el("td", { class: "status " + statusClass(status) }, status,
      agent.detail ? el("div", { class: "muted" }, agent.detail) : ""),
    el("td", {}, replicas.length ? replicas : (agent.addresses || []).join(", ")),
    el("td", { class: statusClass(breakerState) }, breakerState,
      breaker.failures ? el("div", { class: "muted" }, `${breaker.failures} failures`) : ""),
    el("td", {}, `${agent.in_flight || 0}` + (agent.max_concurrency ? ` / ${agent.max_concurrency}` : "")),
    ...recentCells(agent.recent),
    el("td", {}, skills),
    el("td", {}, card.name
      ? el("details", {}, el("summary", {}, card.version ? `v${card.version}` : "card"),
        el("pre", {}, JSON.stringify(card, null, 2)))
      : el("span", { class: "muted" }, "none")));
}

function renderAgents({ agents, window: win }) {
  const body = $("#agents-table tbody");
  body.replaceChildren(...agents.map(agentRow));
  $("#agents-updated").textContent = "updated " + new Date().toLocaleTimeString();
  if (win) {
    $("#agents-window").textContent = win.covered_seconds + 1 < win.seconds
      ? `over the ${lasting(win.covered_seconds)} since the gateway started (window ${lasting(win.seconds)})`
      : `over the last ${lasting(win.seconds)}`;
  }
}

function startAgentStream() {
  if (agentsStream) return;
  agentsStream = new EventSource("events");
  agentsStream.addEventListener("agents", (event) => {
    $("#live").textContent = "live";
    $("#live").classList.add("on");
    renderAgents(JSON.parse(event.data));
  });
  agentsStream.addEventListener("error", () => {
    $("#live").textContent = "reconnecting";
    $("#live").classList.remove("on");
  });
}

async function showAgents() {
  renderAgents(await api("agents"));
  startAgentStream();
}

// -- jobs -------------------------------------------------------------------------

async function showJobs() {
  const state = new FormData($("#jobs-filter")).get("state") || "";
  const { jobs } = await api("jobs?state=" + encodeURIComponent(state));
  $("#jobs-table tbody").replaceChildren(...jobs.map((job) => {
    const state = trimmed(job.state, "TASK_STATE_");
    return el("tr", { class: "clickable", dataset: { job: job.job_id },
      onclick: () => { location.hash = "#job/" + job.job_id; } },
    el("td", { class: "mono" }, job.job_id),
    el("td", { class: statusClass(state) }, state),
    el("td", {}, job.kind),
    el("td", {}, job.description),
    el("td", {}, job.created_at ? clock(job.created_at * 1000) : ""),
    el("td", { class: "muted" }, job.message || ""));
  }));
}

function showJobState(state) {
  $("#job-state").textContent = state;
  $("#job-state").className = statusClass(state);
}

const lower = (name, prefix) => trimmed(name, prefix).toLowerCase();
const who = (agent, skill) => (agent ? ` (${[agent, skill].filter(Boolean).join("/")})` : "");

function workflowEventText(w) {
  if (w.started) return `workflow ${w.started.workflow} started: ${(w.started.steps || []).join(", ")}`;
  if (w.step_started) {
    const s = w.step_started;
    return `step ${s.step} started${who(s.agent, s.skill)}` + (s.attempt > 1 ? `, attempt ${s.attempt}` : "");
  }
  if (w.step_partial) return `step ${w.step_partial.step}: partial output`;
  if (w.step_finished) {
    const s = w.step_finished;
    return `step ${s.step} ${lower(s.outcome, "STEP_OUTCOME_") || "finished"}${who(s.agent)}`
      + (s.latency_ms !== undefined ? ` in ${millis(s.latency_ms)}` : "")
      + (s.message ? `: ${s.message}` : "");
  }
  if (w.final) {
    return `workflow ${w.final.workflow} ${lower(w.final.state, "TASK_STATE_")}`
      + (w.final.latency_ms !== undefined ? ` in ${millis(w.final.latency_ms)}` : "");
  }
  if (w.error) return `error ${w.error.code || ""} ${w.error.source || ""}: ${w.error.message || ""}`;
  return null;
}

function invokeEventText(i) {
  if (i.started) return `started${who(i.started.agent, i.started.skill)}`;
  if (i.partial) return "partial output";
  if (i.final) return `answered${who(i.final.agent, i.final.skill)}`;
  if (i.error) return `error ${i.error.code || ""} ${i.error.source || ""}: ${i.error.message || ""}`;
  if (i.progress) {
    const p = i.progress;
    return `step ${p.step} ${p.status}${who(p.agent)}` + (p.message ? `: ${p.message}` : "");
  }
  return null;
}

function jobEventText(event) {
  // One line per event; the whole event is under it (details).
  if (event.state) {
    const state = trimmed(event.state.state, "TASK_STATE_");
    showJobState(state);
    return `state ${state}` + (event.state.message ? `: ${event.state.message}` : "");
  }
  const text = event.workflow ? workflowEventText(event.workflow)
    : event.invoke ? invokeEventText(event.invoke) : null;
  return text || JSON.stringify(event.workflow || event.invoke || {});
}

function jobEventItem(event) {
  const inner = event.workflow || event.invoke || event.state;
  return el("li", { dataset: { offset: event.offset || 0 } },
    el("span", { class: "event-text" }, `#${event.offset || 0} `, jobEventText(event)),
    inner ? el("details", {}, el("summary", {}, "event"), el("pre", {}, JSON.stringify(inner, null, 2))) : "");
}

async function showJob(jobId) {
  $("#job-id").textContent = jobId;
  const list = $("#job-events");
  list.replaceChildren();
  const { job } = await api("jobs/" + encodeURIComponent(jobId));
  showJobState(trimmed(job.state, "TASK_STATE_"));
  jobStream = new EventSource("api/jobs/" + encodeURIComponent(jobId) + "/events");
  jobStream.addEventListener("job", (message) => {
    list.append(jobEventItem(JSON.parse(message.data)));
  });
  jobStream.addEventListener("end", () => { jobStream.close(); jobStream = null; });
}

// -- workflows ----------------------------------------------------------------------

const NODE_W = 150, NODE_H = 44, GAP_X = 50, GAP_Y = 14;

function stepLabel(step) {
  if (step.kind === "agent" || step.kind === "map" || step.kind === "fan_out") {
    return [step.agent, step.skill].filter(Boolean).join("/") || step.kind;
  }
  if (step.kind === "workflow") return "workflow " + step.workflow;
  return step.kind;
}

function node(step, x, y) {
  const group = svgEl("g", { class: "node " + step.kind, transform: `translate(${x},${y})` });
  group.dataset.step = step.id;
  group.append(svgEl("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
  group.append(svgEl("text", { x: 8, y: 17 }, step.id));
  group.append(svgEl("text", { x: 8, y: 34, class: "sub" }, stepLabel(step).slice(0, 22)));
  if (step.when) group.append(svgEl("title", {}, "when " + step.when));
  return group;
}

function workflowGraph(workflow) {
  // Steps run in order; a parallel step's children run side by side between them.
  const columns = workflow.steps.map((step) =>
    step.kind === "parallel" && step.children.length ? step.children : [step]);
  const tallest = Math.max(1, ...columns.map((column) => column.length));
  const height = tallest * (NODE_H + GAP_Y) + GAP_Y;
  const width = columns.length * (NODE_W + GAP_X) + GAP_X;
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.append(svgEl("defs", {}, svgEl("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
  svgEl("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8a96a3" }))));
  let previous = [];
  columns.forEach((column, index) => {
    const x = GAP_X / 2 + index * (NODE_W + GAP_X);
    const top = (height - column.length * (NODE_H + GAP_Y) + GAP_Y) / 2;
    const points = column.map((step, row) => {
      const y = top + row * (NODE_H + GAP_Y);
      svg.append(node(step, x, y));
      return { x, y: y + NODE_H / 2, step };
    });
    for (const from of previous) {
      for (const to of points) {
        const midX = (from.x + NODE_W + to.x) / 2;
        svg.append(svgEl("path", { class: "edge", "data-from": from.step.id, "data-to": to.step.id,
          d: `M ${from.x + NODE_W} ${from.y} C ${midX} ${from.y}, ${midX} ${to.y}, ${to.x} ${to.y}` }));
      }
    }
    previous = points;
  });
  return svg;
}

async function showWorkflows() {
  const { workflows } = await api("workflows");
  const box = $("#workflows");
  if (!workflows.length) {
    box.replaceChildren(el("p", { class: "muted" }, "No declared workflows (workflow_dir)."));
    return;
  }
  box.replaceChildren(...workflows.map((workflow) =>
    el("div", { class: "workflow", dataset: { workflow: workflow.name } },
      el("h3", {}, workflow.name), el("p", { class: "muted" }, workflow.description || ""),
      workflowGraph(workflow))));
}

// -- traces -------------------------------------------------------------------------

async function showTraces() {
  const form = new FormData($("#traces-filter"));
  const query = new URLSearchParams();
  for (const [key, value] of form.entries()) if (String(value).trim()) query.set(key, value);
  const result = await api("traces?" + query.toString());
  $("#traces-source").textContent = result.source
    ? `${result.traces.length} of ${result.total} from ${result.source}`
    : "no span file (dashboard_traces_file); `agentmesh up` sets it";
  $("#traces-table tbody").replaceChildren(...result.traces.map((trace) =>
    el("tr", { class: "clickable", dataset: { trace: trace.trace_id },
      onclick: () => { location.hash = "#trace/" + trace.trace_id; } },
    el("td", { class: "mono" }, trace.trace_id.slice(0, 12)),
    el("td", {}, clock(trace.start_ms)),
    el("td", {}, trimmed(trace.request, "agentmesh.v1.")),
    el("td", {}, trace.services.join(", ")),
    el("td", {}, trace.spans),
    el("td", {}, trace.duration_ms.toFixed(1)),
    el("td", { class: statusClass(trace.failed ? "ERROR" : trace.status) }, trace.status))));
}

async function showTrace(traceId) {
  const trace = await api("traces/" + encodeURIComponent(traceId));
  $("#trace-id").textContent = trace.trace_id;
  $("#trace-summary").textContent =
    `${trace.duration_ms.toFixed(1)} ms, ${trace.spans.length} spans, ${trace.status}`;
  const total = trace.duration_ms || 1;
  $("#waterfall tbody").replaceChildren(...trace.spans.map((span) => {
    const left = (span.offset_ms / total) * 100;
    const width = Math.max((span.duration_ms / total) * 100, 0.3);
    const agent = span.attributes["agentmesh.agent"];
    return el("tr", { class: "span-row", dataset: { span: span.span_id, name: span.name } },
      el("td", {}, span.service),
      el("td", { style: `padding-left:${0.6 + span.depth * 1.2}rem` },
        trimmed(span.name, "agentmesh.v1."),
        el("span", { class: "muted" }, " " + span.kind.toLowerCase() + (agent ? " " + agent : ""))),
      el("td", {}, span.duration_ms.toFixed(1)),
      el("td", { class: "timeline" }, el("div", { class: "bar-track" },
        el("div", { class: "bar" + (span.error ? " error" : ""),
          style: `left:${left.toFixed(2)}%;width:${Math.min(width, 100 - left).toFixed(2)}%` }))),
      el("td", { class: statusClass(span.error ? "ERROR" : span.status) }, span.status));
  }));
}

// -- routing ------------------------------------------------------------------------

const PAGES = {
  agents: showAgents, jobs: showJobs, job: showJob,
  workflows: showWorkflows, traces: showTraces, trace: showTrace,
};

async function route() {
  const [page, arg] = (location.hash.slice(1) || "agents").split("/");
  const show = PAGES[page] ? page : "agents";
  if (jobStream) { jobStream.close(); jobStream = null; }
  $("#error").hidden = true;
  $("#login").hidden = true;
  document.querySelectorAll(".page").forEach((section) => {
    section.hidden = section.id !== "page-" + show;
  });
  document.querySelectorAll("nav a").forEach((link) => {
    link.classList.toggle("active", link.dataset.page === show || link.dataset.page + "s" === show);
  });
  try {
    await PAGES[show](arg && decodeURIComponent(arg));
  } catch (error) {
    showError(error);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#jobs-filter").addEventListener("submit", (event) => { event.preventDefault(); showJobs().catch(showError); });
  $("#traces-filter").addEventListener("submit", (event) => { event.preventDefault(); showTraces().catch(showError); });
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("session", { method: "POST", body: new FormData(event.target),
      credentials: "same-origin" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      $("#login-reason").textContent = (body.error && body.error.message) || response.statusText;
      return;
    }
    if (agentsStream) { agentsStream.close(); agentsStream = null; }
    route();
  });
  window.addEventListener("hashchange", route);
  route();
});
