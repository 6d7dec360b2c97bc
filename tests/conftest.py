"""Fixtures shared by the whole suite."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from meshtest import REPO_ROOT, free_port, service_env


@pytest.fixture(scope="session", autouse=True)
def interruptible_children() -> None:
    """Processes the tests start take SIGINT as a user's Ctrl-C.

    A suite started in the background by a non-interactive shell inherits SIGINT
    ignored, and an ignored signal stays ignored across exec in every process it
    starts; a handled one is reset to the default there.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``agentmesh up`` records its latest run under $XDG_STATE_HOME: not the user's, here."""
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if saved is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = saved


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``python ARGS`` (e.g. ``-m MODULE ...``); each is stopped by PID at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env or service_env(),
            cwd=REPO_ROOT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 for the whole run (no persistence); stopped by PID."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail(
            "redis-server is not installed (Debian package redis-server; .ci/run installs it)"
        )
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):  # bounded wait for the port to accept connections
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            if process.poll() is not None:
                pytest.fail(f"redis-server exited with status {process.returncode}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def redis_db(redis_url: str) -> str:
    """``redis_url``, emptied before the test."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    return redis_url


@pytest.fixture(params=["memory", "redis"])
async def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Gateway settings for its stores: in memory (``{}``), or an emptied real redis-server."""
    if request.param == "memory":
        return {}
    url: str = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    return {"redis_url": url}
