"""Prometheus metrics of every agentmesh service, defined once.

The objects live in prometheus-client's default registry; any module updates
them directly (``UPSTREAM_RETRIES.labels(agent="qa", reason="UNAVAILABLE").inc()``).
Updating a metric is a few hundred nanoseconds and needs no exporter: the
numbers are only read when the metrics endpoint is scraped.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets from 1 ms to 60 s: agents range from sub-millisecond
# calculators to model calls that take tens of seconds.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

# -- every gRPC server (recorded by the server interceptor) -------------------
RPC_REQUESTS = Counter(
    "agentmesh_rpc_requests",
    "RPCs served, by method and final gRPC status code",
    ["method", "code"],
)
RPC_DURATION = Histogram(
    "agentmesh_rpc_duration_seconds",
    "Time to serve one RPC (a stream: until its last message)",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
RPC_IN_FLIGHT = Gauge("agentmesh_rpc_in_flight", "RPCs being served now", ["method"])
WORK_ABANDONED = Counter(
    "agentmesh_work_abandoned",
    "Agent work stopped because its call was cancelled or ran out of time, by how it "
    "stopped (interrupted, or killed and replaced)",
    ["agent", "outcome"],
)

# -- the gateway's calls to agents --------------------------------------------
UPSTREAM_REQUESTS = Counter(
    "agentmesh_upstream_requests",
    "Calls from the gateway to an agent (each attempt counts), by final status code",
    ["agent", "code"],
)
UPSTREAM_DURATION = Histogram(
    "agentmesh_upstream_duration_seconds",
    "Duration of one call attempt from the gateway to an agent",
    ["agent"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_IN_FLIGHT = Gauge(
    "agentmesh_upstream_in_flight", "Calls from the gateway to an agent under way", ["agent"]
)
UPSTREAM_RETRIES = Counter(
    "agentmesh_upstream_retries",
    "Retry attempts made by the gateway, by the code that caused them",
    ["agent", "reason"],
)
UPSTREAM_REJECTED = Counter(
    "agentmesh_upstream_rejected",
    "Calls refused before reaching an agent: open breaker, bulkhead full, retry budget spent",
    ["agent", "reason"],
)
BREAKER_STATE = Gauge(
    "agentmesh_breaker_state",
    "Circuit breaker state per agent: 0 closed, 1 half-open, 2 open",
    ["agent"],
)
BREAKER_TRANSITIONS = Counter(
    "agentmesh_breaker_transitions", "Circuit breaker state changes", ["agent", "to"]
)
RATE_LIMITED = Counter(
    "agentmesh_rate_limited", "Requests refused by the per-client rate limit", ["client"]
)

# -- orchestration ------------------------------------------------------------
FANOUT_WIDTH = Histogram(
    "agentmesh_fanout_width",
    "Legs per fan-out request",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
WORKFLOW_STEPS = Counter(
    "agentmesh_workflow_steps", "Workflow steps finished, by outcome", ["workflow", "outcome"]
)
WORKFLOW_RUNS = Counter(
    "agentmesh_workflow_runs", "Workflow runs finished, by final state", ["workflow", "state"]
)
JOBS = Counter("agentmesh_jobs", "Jobs that reached a state", ["kind", "state"])
JOBS_ACTIVE = Gauge("agentmesh_jobs_active", "Jobs submitted or running in this gateway")
JOB_WORKERS = Gauge("agentmesh_job_workers", "Job worker loops alive in this gateway")
CACHE_LOOKUPS = Counter(
    "agentmesh_cache_lookups", "Response cache lookups, by result (hit or miss)", ["result"]
)

# -- models -------------------------------------------------------------------
LLM_TOKENS = Counter(
    "agentmesh_llm_tokens", "Model tokens used, by model and kind (prompt or completion)",
    ["provider", "model", "kind"],
)  # fmt: skip
LLM_COST = Counter(
    "agentmesh_llm_cost_usd", "Estimated model cost in US dollars", ["provider", "model"]
)
LLM_REQUESTS = Counter(
    "agentmesh_llm_requests", "HTTP requests to model providers, by outcome",
    ["provider", "model", "outcome"],
)  # fmt: skip
