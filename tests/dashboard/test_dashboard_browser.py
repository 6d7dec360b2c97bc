"""The web dashboard in a real headless browser: Debian's chromium, driven by Selenium.

A real gateway (HTTP port 0) with six agents on port 0 serves ``/dashboard/``;
its traces page reads a span file written the way ``agentmesh up``'s collector
writes it, from the spans of a real traced gRPC call; a declared workflow is
drawn, run as a job and followed live. Selenium Manager never runs: the driver
and browser are Debian's (``chromium``, ``chromium-driver``). One browser session
goes through every page.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from meshtest import ProbeAgent, running_mesh
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentmesh.client import CallError
from agentmesh.runtime import ServerSettings
from agentmesh.runtime.service import AgentServicer
from agentmesh.telemetry import TelemetryInterceptor
from agentmesh.telemetry.collector import SpanStore, spans_from_request
from agentmesh.v1 import agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
AGENTS = ("summarizer", "sentiment", "keywords", "calculator", "translator", "reviewer")
WAIT = 30.0  # seconds any one page condition may take, at most
# A declared workflow: one step, two side by side, then one that waits to be released.
WORKFLOW = """\
name: triage
description: echo, both sides at once, then hold until released
steps:
  - id: first
    agent: summarizer
    skill: echo
    input: ${input.text}
  - id: sides
    parallel:
      - id: left
        agent: sentiment
        skill: echo
        input: ${steps.first.output.text}
      - id: right
        agent: calculator
        skill: echo
        input: ${steps.first.output.text}
  - id: held
    agent: translator
    skill: hold
    input: ${input.text}
"""
EDGES = {("first", "left"), ("first", "right"), ("left", "held"), ("right", "held")}

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    if os.environ.get("CI"):
        pytest.fail(
            f"{CHROMIUM} and {CHROMEDRIVER} are needed in CI (.ci/run installs chromium and "
            "chromium-driver)",
            pytrace=False,
        )
    pytest.skip(
        "the dashboard browser test needs Debian's chromium and chromium-driver "
        "(apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402  (only once the browser is known to be there)
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


async def write_traced_call(path: Path) -> list[str]:
    """Spans of one real traced call (a caller's span, then the agent's server span and
    its own), stored as the collector stores what it receives; returns their names in
    start order."""
    exporter = InMemorySpanExporter()
    caller = TracerProvider(resource=Resource.create({"service.name": "caller"}))
    agent_side = TracerProvider(resource=Resource.create({"service.name": "probe"}))
    for provider in (caller, agent_side):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = grpc.aio.server(
        interceptors=[TelemetryInterceptor(tracer=agent_side.get_tracer("agentmesh"))]
    )
    agent_pb2_grpc.add_AgentServicer_to_server(
        AgentServicer(ProbeAgent("summarizer"), ServerSettings()), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub: agent_pb2_grpc.AgentAsyncStub = agent_pb2_grpc.AgentStub(channel)
            with caller.get_tracer("test").start_as_current_span("dashboard-test/request"):
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                request = pb.InvokeRequest(
                    skill="echo", message=pb.Message(parts=[pb.Part(text="hello")])
                )
                await stub.Invoke(request, metadata=tuple(carrier.items()), timeout=10)
    finally:
        await server.stop(0)
    spans = exporter.get_finished_spans()
    records = spans_from_request(encode_spans(spans))
    SpanStore(path).add(records)
    assert len({r.trace_id for r in records}) == 1
    return [r.name for r in sorted(records, key=lambda r: r.start_ns)]


async def in_browser(function: Callable[..., Any], *args: Any) -> Any:
    """Selenium blocks: run it in a thread while this loop serves the gateway."""
    return await asyncio.to_thread(function, *args)


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any]) -> Any:
    """``condition``'s first truthy value; an element redrawn under it (the live pages
    redraw their tables) is looked up again at the next poll."""
    return WebDriverWait(
        driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition)


def text_of(driver: WebDriver, selector: str) -> str:
    """The text of the element at ``selector``, read in one go ("" when absent)."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';"
    return str(driver.execute_script(script, selector))


def attributes(driver: WebDriver, selector: str, *names: str) -> list[list[str]]:
    """``names`` of every element at ``selector``, read in one go."""
    script = (
        "return [...document.querySelectorAll(arguments[0])]"
        ".map((e) => arguments[1].map((n) => e.getAttribute(n)));"
    )
    return [[str(v) for v in row] for row in driver.execute_script(script, selector, names)]


def click(driver: WebDriver, selector: str) -> bool:
    driver.find_element(By.CSS_SELECTOR, selector).click()
    return True


def agent_cell(driver: WebDriver, name: str, cell: str) -> str:
    """The text the agents table shows in ``cell`` (a class: status, error-rate, p50, ...)
    for ``name``, up to its first child element (read in one go: rows are redrawn)."""
    script = (
        "const cell = document.querySelector("
        '`tr[data-agent="${arguments[0]}"] td.${arguments[1]}`);'
        "return cell && cell.firstChild ? cell.firstChild.textContent : '';"
    )
    return str(driver.execute_script(script, name, cell))


def agent_status(driver: WebDriver, name: str) -> str:
    return agent_cell(driver, name, "status")


def job_view(driver: WebDriver) -> tuple[str, list[str], object]:
    """The job page's state, its event lines, and the page's marker (see the test)."""
    script = (
        "return [document.getElementById('job-state').textContent,"
        " [...document.querySelectorAll('#job-events .event-text')].map((e) => e.textContent),"
        " window.stillTheSamePage || null];"
    )
    state, lines, marker = driver.execute_script(script)
    return str(state), [str(line) for line in lines], marker


async def test_the_dashboard_shows_agents_calls_jobs_workflows_traces_and_an_agent_going_down(
    browser: WebDriver, tmp_path: Path
) -> None:
    traces_file = tmp_path / "traces.jsonl"
    span_names = await write_traced_call(traces_file)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "triage.yaml").write_text(WORKFLOW)
    agents = {name: ProbeAgent(name) for name in AGENTS}
    # An agent's status turns UNAVAILABLE at its next card refresh (or failed call).
    async with running_mesh(
        *agents.values(),
        http_port=0,
        workflow_dir=workflows,
        dashboard_traces_file=traces_file,
        dashboard_interval=0.2,
        card_refresh_interval=0.5,
    ) as mesh:
        base = mesh.gateway.http_url()
        assert base is not None
        # The agents page: every agent serving, with its skills.
        await in_browser(browser.get, base + "dashboard/")
        await in_browser(
            wait_for, browser, lambda d: all(agent_status(d, n) == "SERVING" for n in AGENTS)
        )
        assert "echo" in text_of(browser, f'tr[data-agent="{AGENTS[0]}"]')
        assert agent_cell(browser, "reviewer", "calls") == "0"
        assert agent_cell(browser, "reviewer", "error-rate") == "\u2013"  # no calls, no rate

        # Calls to one agent, some failing: its row's next update shows them.
        for n in range(3):
            await mesh.client.invoke("reviewer/echo", f"fine {n}")
        for n in range(2):
            with pytest.raises(CallError):
                await mesh.client.invoke("reviewer/crash", f"boom {n}")
        await in_browser(
            wait_for, browser, lambda d: agent_cell(d, "reviewer", "error-rate") == "40 %"
        )
        assert agent_cell(browser, "reviewer", "calls") == "5"
        for quantile in ("p50", "p99"):
            latency = agent_cell(browser, "reviewer", quantile)
            assert latency.endswith((" ms", " s")), latency
        assert agent_cell(browser, "summarizer", "error-rate") == "\u2013"
        window = text_of(browser, "#agents-window")
        assert "since the gateway started" in window or "last 5 min" in window
        await in_browser(browser.save_screenshot, str(shots / "agents.png"))

        # The traces page lists the call; its waterfall shows the spans in order.
        await in_browser(browser.get, base + "dashboard/#traces")
        listed = await in_browser(
            wait_for, browser, lambda d: attributes(d, "tr[data-trace]", "data-trace")
        )
        assert len(listed) == 1
        await in_browser(wait_for, browser, lambda d: click(d, "tr[data-trace]"))
        rows = await in_browser(
            wait_for, browser, lambda d: attributes(d, "tr.span-row", "data-name")
        )
        shown = [name for (name,) in rows]
        assert shown == span_names
        assert shown[0] == "dashboard-test/request"
        assert "agentmesh.v1.Agent/Invoke" in shown
        await in_browser(browser.save_screenshot, str(shots / "trace.png"))

        # An agent stopped: the agents page's next live update says UNAVAILABLE.
        await in_browser(browser.get, base + "dashboard/#agents")
        await in_browser(wait_for, browser, lambda d: agent_status(d, "keywords") == "SERVING")
        await mesh.servers["keywords"].stop(0)
        await in_browser(wait_for, browser, lambda d: agent_status(d, "keywords") == "UNAVAILABLE")
        assert agent_status(browser, "summarizer") == "SERVING"
        await in_browser(browser.save_screenshot, str(shots / "agent-down.png"))

        # The declared workflow, drawn: a node per step, an edge per hand-over.
        await in_browser(browser.get, base + "dashboard/#workflows")
        nodes = await in_browser(
            wait_for,
            browser,
            lambda d: attributes(d, '[data-workflow="triage"] svg g.node', "data-step"),
        )
        assert {step for (step,) in nodes} == {"first", "left", "right", "held"}
        edges = attributes(
            browser, '[data-workflow="triage"] svg path.edge', "data-from", "data-to"
        )
        assert {(start, end) for start, end in edges} == EDGES
        await in_browser(browser.save_screenshot, str(shots / "workflow.png"))

        # A job of it, opened from the jobs page: its events arrive while it runs, and
        # its final state, without the page being loaded again.
        job = await mesh.client.submit(workflow="triage", text="look at this")
        await asyncio.wait_for(agents["translator"].entered.wait(), WAIT)
        await in_browser(browser.get, base + "dashboard/#jobs")
        await in_browser(wait_for, browser, lambda d: click(d, f'tr[data-job="{job.job_id}"]'))
        await in_browser(
            wait_for, browser, lambda d: any("step held started" in e for e in job_view(d)[1])
        )
        state, lines, _ = job_view(browser)
        assert state == "WORKING"
        assert not any("COMPLETED" in line for line in lines), "\n".join(lines)
        browser.execute_script("window.stillTheSamePage = true;")
        agents["translator"].release.set()
        await in_browser(wait_for, browser, lambda d: job_view(d)[0] == "COMPLETED")
        state, after, marker = job_view(browser)
        assert marker is True  # the same page, updated by its event stream
        assert after[: len(lines)] == lines
        assert after[-1].endswith("state COMPLETED")
        assert any("step held succeeded (translator)" in line for line in after[len(lines) :])
        assert len(after) > len(lines)
        await in_browser(browser.save_screenshot, str(shots / "job.png"))
        error = await in_browser(browser.find_element, By.ID, "error")
        assert not await in_browser(error.is_displayed)
    assert all(
        (shots / f"{n}.png").stat().st_size > 0
        for n in ("agents", "trace", "agent-down", "workflow", "job")
    )
