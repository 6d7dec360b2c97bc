"""A work process of :mod:`agentmesh.runtime.work`: ``python -m agentmesh.runtime._worker``.

Reads length-prefixed pickles from stdin: first the parent's ``sys.path``,
then one ``(fn, args, kwargs)`` per call; writes one reply per call to the
stdout it was started with (``print`` in ``fn`` goes to stderr instead).
SIGUSR1 interrupts the call under way. SIGINT and SIGTERM are the parent's to
handle; the process ends when its stdin closes or its parent dies.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import traceback
from types import FrameType
from typing import Any, BinaryIO

_HEADER = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1


class Abandoned(BaseException):
    """Raised inside the running function when its call was abandoned."""


_running = False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if _running:
        raise Abandoned


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        ctypes.CDLL(name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _read(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def _write(stream: BinaryIO, reply: tuple[Any, ...]) -> None:
    try:
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an unpicklable result or error
        data = pickle.dumps(("error", f"the result cannot be sent back: {exc!r}"))
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _run(frame: bytes) -> tuple[Any, ...]:
    global _running
    from agentmesh.runtime.errors import AgentError

    try:
        try:
            _running = True
            fn, args, kwargs = pickle.loads(frame)  # noqa: S301 - from our parent
            return ("ok", fn(*args, **kwargs))
        finally:
            _running = False
    except Abandoned:
        return ("abandoned",)
    except AgentError as exc:
        return ("agent_error", exc.code.value, exc.message)
    except Exception:
        return ("error", traceback.format_exc())


def main() -> None:
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the death signal was set
        return
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the replies
    first = _read(requests)
    if first is None:
        return
    sys.path[:] = pickle.loads(first)  # noqa: S301 - from our parent
    signal.signal(signal.SIGUSR1, _interrupt)
    while (frame := _read(requests)) is not None:
        _write(replies, _run(frame))


if __name__ == "__main__":
    main()
