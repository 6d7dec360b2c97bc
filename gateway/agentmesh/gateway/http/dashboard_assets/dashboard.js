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

function agentRow(agent) {
  const status = trimmed(agent.status, "AGENT_STATUS_") || "UNSPECIFIED";
  const breaker = agent.breaker || {};
  const breakerState = trimmed(breaker.state, "BREAKER_STATE_") || "CLOSED";
  const card = agent.card || {};
  const replicas = (agent.replicas || []).map((replica) =>
    el("div", { class: "mono" }, replica.address,
      replica.ejected ? el("span", { class: "status-OPEN" }, " ejected") : "",
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
    el("td", {}, skills),
    el("td", {}, card.name
      ? el("details", {}, el("summary", {}, card.version ? `v${card.version}` : "card"),
        el("pre", {}, JSON.stringify(card, null, 2)))
      : el("span", { class: "muted" }, "none")));
}

function renderAgents(agents) {
  const body = $("#agents-table tbody");
  body.replaceChildren(...agents.map(agentRow));
  $("#agents-updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function startAgentStream() {
  if (agentsStream) return;
  agentsStream = new EventSource("events");
  agentsStream.addEventListener("agents", (event) => {
    $("#live").textContent = "live";
    $("#live").classList.add("on");
    renderAgents(JSON.parse(event.data).agents);
  });
  agentsStream.addEventListener("error", () => {
    $("#live").textContent = "reconnecting";
    $("#live").classList.remove("on");
  });
}

async function showAgents() {
  renderAgents((await api("agents")).agents);
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

function jobEventText(event) {
  if (event.state) {
    const state = trimmed(event.state.state, "TASK_STATE_");
    $("#job-state").textContent = state;
    $("#job-state").className = statusClass(state);
    return `state ${state}` + (event.state.message ? `: ${event.state.message}` : "");
  }
  const inner = event.workflow || event.invoke || {};
  return JSON.stringify(inner);
}

async function showJob(jobId) {
  $("#job-id").textContent = jobId;
  const list = $("#job-events");
  list.replaceChildren();
  const { job } = await api("jobs/" + encodeURIComponent(jobId));
  const state = trimmed(job.state, "TASK_STATE_");
  $("#job-state").textContent = state;
  $("#job-state").className = statusClass(state);
  jobStream = new EventSource("api/jobs/" + encodeURIComponent(jobId) + "/events");
  jobStream.addEventListener("job", (message) => {
    const event = JSON.parse(message.data);
    list.append(el("li", { class: "mono" }, `#${event.offset || 0} `, jobEventText(event)));
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
        svg.append(svgEl("path", { class: "edge",
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
