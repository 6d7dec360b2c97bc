"""The Anthropic Messages API.

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version:
2023-06-01``. System messages become the top-level ``system`` field (joined by
blank lines); ``stop`` becomes ``stop_sequences``. The API has no JSON mode:
``json_mode`` appends an instruction to the system prompt instead.

Streaming events: ``message_start`` (model, input usage),
``content_block_delta`` with a ``text_delta`` (text), ``message_delta``
(stop_reason, cumulative output usage), ``message_stop`` (end), ``error``
(raised as StreamError, retryable for overloaded/api/rate-limit errors);
``ping`` and other events are ignored.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar

from agentmesh.llm._errors import InvalidResponse, StreamError, clip, redact
from agentmesh.llm._http import HTTPProvider, finish_reason, non_negative_int
from agentmesh.llm._sse import SSEEvent
from agentmesh.llm._types import FINISH_LENGTH, FINISH_STOP, ChatChunk, ChatRequest, ChatResponse

ANTHROPIC_VERSION = "2023-06-01"
JSON_INSTRUCTION = (
    "Respond with a single valid JSON value and nothing else: no prose, no code fences."
)
_FINISH_REASONS = {
    "end_turn": FINISH_STOP,
    "stop_sequence": FINISH_STOP,
    "max_tokens": FINISH_LENGTH,
}
_RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


class AnthropicProvider(HTTPProvider):
    """A provider speaking the Anthropic Messages wire format."""

    kind: ClassVar[str] = "anthropic"
    usage_keys: ClassVar[tuple[str, str]] = ("input_tokens", "output_tokens")

    @property
    def url(self) -> str:
        return f"{self.config.base_url}/v1/messages"

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if self.config.api_key is not None:
            headers["x-api-key"] = self.config.api_key.get_secret_value()
        return headers

    def _payload(self, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
        system = [m.content for m in req.messages if m.role == "system"]
        if req.json_mode:
            system.append(JSON_INSTRUCTION)
        payload: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": req.max_tokens or self.config.max_tokens,
            "messages": [
                {"role": m.role, "content": m.content} for m in req.messages if m.role != "system"
            ],
            "stream": stream,
        }
        if system:
            payload["system"] = "\n\n".join(system)
        temperature = req.temperature if req.temperature is not None else self.config.temperature
        if temperature is not None:
            payload["temperature"] = min(temperature, 1.0)  # Anthropic's range is 0..1
        if req.stop:
            payload["stop_sequences"] = list(req.stop)
        return payload

    def _parse_completion(self, body: Any, req: ChatRequest) -> ChatResponse:
        try:
            blocks = body["content"]
            text = "".join(
                b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text"
            )
        except (KeyError, TypeError):
            raise InvalidResponse(
                f"provider {self.name!r} answered without a content list of text blocks",
                provider=self.name,
            ) from None
        finish = finish_reason(body.get("stop_reason"), _FINISH_REASONS)
        return self._response(body, text=text, finish=finish, req=req)

    async def _parse_stream(
        self, events: AsyncGenerator[SSEEvent, None], req: ChatRequest
    ) -> AsyncGenerator[ChatChunk, None]:
        model = self.model
        parts: list[str] = []
        input_tokens: int | None = None
        output_tokens: int | None = None
        finish: str | None = None
        stopped = False
        async for event in events:
            if event.event == "ping":
                continue
            data = self._event_json(event)
            kind = data.get("type", event.event)
            if kind == "message_start":
                message = data.get("message")
                if isinstance(message, dict):
                    if isinstance(message.get("model"), str) and message["model"]:
                        model = message["model"]
                    usage = message.get("usage")
                    if isinstance(usage, dict):
                        input_tokens = non_negative_int(usage.get("input_tokens"))
                        output_tokens = non_negative_int(usage.get("output_tokens"))
            elif kind == "content_block_delta":
                delta = data.get("delta")
                if isinstance(delta, dict) and delta.get("type") == "text_delta":
                    text = delta.get("text")
                    if isinstance(text, str) and text:
                        parts.append(text)
                        yield ChatChunk(text, self.name, model)
            elif kind == "message_delta":
                delta = data.get("delta")
                if isinstance(delta, dict):
                    finish = finish_reason(delta.get("stop_reason"), _FINISH_REASONS) or finish
                usage = data.get("usage")
                if isinstance(usage, dict):
                    # Counts here are cumulative; newer API versions repeat input_tokens.
                    output = non_negative_int(usage.get("output_tokens"))
                    output_tokens = output if output is not None else output_tokens
                    prompt = non_negative_int(usage.get("input_tokens"))
                    input_tokens = prompt if prompt is not None else input_tokens
            elif kind == "message_stop":
                stopped = True
                break
            elif kind == "error":
                raise self._stream_error(data)
        if not stopped:
            raise StreamError(
                f"provider {self.name!r}: the stream ended before message_stop",
                provider=self.name,
                retryable=True,
            )
        yield self._final_chunk(
            model=model,
            finish=finish,
            prompt_tokens=input_tokens,
            completion_tokens=output_tokens,
            req=req,
            text="".join(parts),
        )

    def _stream_error(self, data: dict[str, Any]) -> StreamError:
        error = data.get("error")
        error_type = error.get("type") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        detail = clip(redact(message if isinstance(message, str) else "", self._secrets))
        return StreamError(
            f"provider {self.name!r} sent an error in the stream ({error_type}): {detail}",
            provider=self.name,
            retryable=error_type in _RETRYABLE_STREAM_ERRORS,
            detail=detail,
        )
