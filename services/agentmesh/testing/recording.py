"""An agent that records the calls it receives, for asserting what a mesh sent it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill


class RecordingAgent(Agent):
    """Answers every call with ``reply(request)`` (default: the request's text) and
    keeps each :class:`~agentmesh.runtime.Request` in ``calls``, in arrival order.

    ``skills`` are skill ids, or :class:`~agentmesh.runtime.Skill` objects when
    they should declare options. :meth:`assert_called` checks what arrived::

        recorder = RecordingAgent("notes", skills=["store"])
        ...
        recorder.assert_called(skill="store", text="hello", options={"tag": "a"})
    """

    def __init__(
        self,
        name: str = "recorder",
        *,
        skills: Sequence[str | Skill] = ("record",),
        reply: Callable[[Request], Result] | None = None,
    ) -> None:
        declared = tuple(s if isinstance(s, Skill) else Skill(id=s) for s in skills)
        self.card = AgentCard(
            name=name, description="records the calls it receives", skills=declared
        )
        self.calls: list[Request] = []
        self._reply = reply

    async def invoke(self, request: Request) -> Result:
        self.calls.append(request)
        if self._reply is not None:
            return self._reply(request)
        return Result.of(text=request.text)

    def assert_called(
        self,
        *,
        times: int | None = None,
        skill: str | None = None,
        text: str | None = None,
        options: dict[str, object] | None = None,
    ) -> Request:
        """Assert the calls received (``times`` of them, when given) and that the last one
        had ``skill``, ``text`` and ``options`` (those given); returns the last call."""
        name = self.card.name
        if times is not None and len(self.calls) != times:
            raise AssertionError(f"{name}: {len(self.calls)} calls received, expected {times}")
        if not self.calls:
            raise AssertionError(f"{name}: no call received")
        last = self.calls[-1]
        if skill is not None and last.skill != skill:
            raise AssertionError(f"{name}: skill {last.skill!r}, expected {skill!r}")
        if text is not None and last.text != text:
            raise AssertionError(f"{name}: text {last.text!r}, expected {text!r}")
        if options is not None and dict(last.options) != options:
            raise AssertionError(f"{name}: options {dict(last.options)!r}, expected {options!r}")
        return last
