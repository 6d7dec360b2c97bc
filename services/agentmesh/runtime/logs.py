"""Structured logs: one JSON object per line (or plain text for humans).

Extra fields passed with ``logger.info("...", extra={"agent": "qa"})`` are
included in the JSON object. Hooks registered with :func:`add_context_hook`
contribute fields to every record (tracing adds trace_id and span_id).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
_context_hooks: list[Callable[[], Mapping[str, Any]]] = []


def add_context_hook(hook: Callable[[], Mapping[str, Any]]) -> None:
    """Add fields to every log record (e.g. the active trace id)."""
    if hook not in _context_hooks:
        _context_hooks.append(hook)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for hook in _context_hooks:
            entry.update(hook())
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Send the root logger's records to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # grpc's own logger is chatty at INFO during shutdown.
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))
