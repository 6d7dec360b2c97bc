"""A small server-sent events parser (WHATWG HTML "event stream interpretation").

It consumes lines without their terminators, as produced by
``httpx.Response.aiter_lines()`` (which already splits on CRLF, LF and CR):

* an empty line dispatches the event being built, if it has data;
* a line starting with ":" is a comment (servers use them as keep-alives);
* ``field:value`` sets a field, one space after the colon is dropped, a line
  without a colon is a field with an empty value;
* ``data`` lines accumulate, joined with "\\n" (multi-line data);
* ``event`` sets the type (default "message"), ``id`` the last event id
  (ignored if it contains NUL), ``retry`` a reconnection delay in ms (digits only);
* unknown fields are ignored; a UTF-8 BOM at the very start is dropped;
* at end of input, an event without its terminating empty line is discarded
  (a truncated stream must not look complete).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterable


@dataclasses.dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental decoder: feed it lines, it returns an event when one completes."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._first = True

    def feed(self, line: str) -> SSEEvent | None:
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._last_id,
            retry=self._retry,
        )
        self._data = []
        self._event = ""
        return event


async def aiter_sse(lines: AsyncIterable[str]) -> AsyncGenerator[SSEEvent, None]:
    """The events of an event stream given as lines without terminators."""
    decoder = SSEDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
