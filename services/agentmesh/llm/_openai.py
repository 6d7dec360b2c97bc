"""OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp, LM Studio, OpenRouter).

``POST {base_url}/chat/completions`` with ``Authorization: Bearer <key>`` (no
header when no key is configured, as local servers need none). Streaming sets
``stream_options.include_usage`` so the last chunk carries usage; servers that
send none get an estimate (~4 characters per token, ``Usage.estimated``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar

from agentmesh.llm._errors import InvalidResponse, StreamError
from agentmesh.llm._http import HTTPProvider, finish_reason
from agentmesh.llm._sse import SSEEvent
from agentmesh.llm._types import FINISH_LENGTH, FINISH_STOP, ChatChunk, ChatRequest, ChatResponse

_FINISH_REASONS = {"stop": FINISH_STOP, "length": FINISH_LENGTH}


class OpenAIProvider(HTTPProvider):
    """A provider speaking the OpenAI chat-completions wire format."""

    kind: ClassVar[str] = "openai"
    usage_keys: ClassVar[tuple[str, str]] = ("prompt_tokens", "completion_tokens")

    @property
    def url(self) -> str:
        return f"{self.config.base_url}/chat/completions"

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.config.api_key is not None:
            headers["authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        return headers

    def _payload(self, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.config.model,
            "messages": [{"role": m.role, "content": m.content} for m in req.messages],
            "max_tokens": req.max_tokens or self.config.max_tokens,
            "stream": stream,
        }
        temperature = req.temperature if req.temperature is not None else self.config.temperature
        if temperature is not None:
            payload["temperature"] = temperature
        if req.stop:
            payload["stop"] = list(req.stop)
        if req.json_mode:
            payload["response_format"] = {"type": "json_object"}
        if stream:
            payload["stream_options"] = {"include_usage": True}
        return payload

    def _parse_completion(self, body: Any, req: ChatRequest) -> ChatResponse:
        try:
            choice = body["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise InvalidResponse(
                f"provider {self.name!r} answered without choices[0].message.content",
                provider=self.name,
            ) from None
        finish = finish_reason(choice.get("finish_reason"), _FINISH_REASONS)
        return self._response(body, text=text, finish=finish, req=req)

    async def _parse_stream(
        self, events: AsyncGenerator[SSEEvent, None], req: ChatRequest
    ) -> AsyncGenerator[ChatChunk, None]:
        model = self.model
        parts: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] = {}
        done = False
        async for event in events:
            if event.data.strip() == "[DONE]":
                done = True
                break
            data = self._event_json(event)
            if "error" in data:
                raise StreamError(
                    f"provider {self.name!r} sent an error in the stream: "
                    f"{self._error_detail(event.data.encode())}",
                    provider=self.name,
                    retryable=True,
                )
            if isinstance(data.get("model"), str) and data["model"]:
                model = data["model"]
            if isinstance(data.get("usage"), dict):
                usage = data["usage"]
            choices = data.get("choices")
            if not isinstance(choices, list):
                continue
            for choice in choices:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(text, str) and text:
                    parts.append(text)
                    yield ChatChunk(text, self.name, model)
                finish = finish_reason(choice.get("finish_reason"), _FINISH_REASONS) or finish
        if not done and finish is None:
            raise StreamError(
                f"provider {self.name!r}: the stream ended before [DONE]",
                provider=self.name,
                retryable=True,
            )
        yield self._final_chunk(
            model=model,
            finish=finish,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            req=req,
            text="".join(parts),
        )
