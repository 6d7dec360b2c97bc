"""The code-reviewer service: static review of Python source through ``ast``; with a
model configured, the model explains the findings and reviews what static checks miss."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel, Field

from agentmesh.agents._model import ModelAgent, ModelOptions, SkillPrompt, model_result
from agentmesh.agents.code_reviewer import logic
from agentmesh.llm import LLMClient
from agentmesh.runtime import AgentCard, Request, Result, Skill, StreamItem, offload

#: Most source characters and findings shown to the model (the static review covers all).
MODEL_SOURCE_CHARS = 24_000
MODEL_FINDINGS = 50

ROLE_PROMPT = (
    "You are ${agent}, a senior Python reviewer writing for ${audience}. A static analyser "
    "found the numbered findings listed with the code. For each finding, explain in one or "
    "two sentences why it matters and suggest a fix. Then give a short overview of the "
    "code's quality, including problems the analyser cannot see."
)
USER_PROMPT = "Findings:\n${findings}\n\nCode (${filename}):\n```python\n${code}\n```"


class FindingNote(BaseModel):
    """The model's note on one numbered finding."""

    finding: int = Field(ge=1, description="the number of the finding in the list")
    explanation: str = Field(min_length=1, description="why it matters")
    suggestion: str = Field(default="", description="how to fix it")


class ModelReview(BaseModel):
    """The model's reply: an overview and notes on the static findings."""

    overview: str = Field(min_length=1)
    notes: list[FindingNote] = Field(default_factory=list)


class ReviewOptions(ModelOptions):
    """Options of the review skill."""

    filename: str = Field("<input>", description="the name findings are reported under")


class CodeReviewerAgent(ModelAgent):
    card = AgentCard(
        name="code-reviewer",
        version="1.0.0",
        description="Reviews Python source without running it: complexity and security smells; "
        "with a model configured, also an explanation of each finding.",
        skills=(
            Skill(
                id="review",
                name="Review Python",
                description="Findings with line, severity and rule; complexity per function. "
                "Option: filename.",
                tags=("code", "python", "security", "review"),
                examples=("x = eval(input())",),
                input_modes=("text/x-python", "text/plain"),
                options=ReviewOptions,
            ),
        ),
    )
    prompts = {
        "review": SkillPrompt(
            ROLE_PROMPT,
            USER_PROMPT,
            {"audience": "the author of the code"},
            supplied=frozenset({"findings", "filename", "code"}),
        )
    }

    async def _review(self, request: Request) -> tuple[str, logic.Review]:
        source = request.require_text(max_chars=logic.MAX_SOURCE_BYTES)
        filename = request.str_option("filename", "<input>")
        return source, await offload(logic.review, source, filename=filename)

    async def offline(self, request: Request) -> Result:
        _, review = await self._review(request)
        return Result.of(text=_findings_text(review), data=review.to_dict())

    async def with_model(self, request: Request, llm: LLMClient) -> AsyncIterator[StreamItem]:
        source, review = await self._review(request)
        findings, code = _model_input(source, review)
        chat = self.chat(request, findings=findings, filename=review.filename, code=code)
        notes, response = await self.ask_json(request, llm, chat, ModelReview)
        listed = min(len(review.findings), MODEL_FINDINGS)  # what the model was shown
        by_finding = {n.finding: n for n in notes.notes if n.finding <= listed}
        data = review.to_dict()
        for number, finding in enumerate(data["findings"], start=1):
            note = by_finding.get(number)
            if note is not None:
                finding["explanation"] = note.explanation
                finding["suggestion"] = note.suggestion
        data["overview"] = notes.overview
        lines = [_findings_text(review), "", notes.overview]
        for number, note in sorted(by_finding.items()):
            finding = review.findings[number - 1]
            fix = f" Fix: {note.suggestion}" if note.suggestion else ""
            lines.append(f"line {finding.line} [{finding.rule}]: {note.explanation}{fix}")
        yield model_result(response, text="\n".join(lines), data=data)


def _findings_text(review: logic.Review) -> str:
    lines = [
        f"{review.filename}:{f.line}:{f.col}: {f.severity} [{f.rule}] {f.message}"
        for f in review.findings
    ]
    lines.append(
        f"{len(review.findings)} findings; highest severity: {review.max_severity or 'none'}"
    )
    return "\n".join(lines)


def _model_input(source: str, review: logic.Review) -> tuple[str, str]:
    """The numbered findings and the code, as the user prompt shows them."""
    listed = review.findings[:MODEL_FINDINGS]
    findings = "\n".join(
        f"{n}. line {f.line}, column {f.col}: {f.severity} [{f.rule}] {f.message}"
        for n, f in enumerate(listed, start=1)
    )
    if len(review.findings) > len(listed):
        findings += f"\n(and {len(review.findings) - len(listed)} more not listed)"
    shown = source[:MODEL_SOURCE_CHARS]
    cut = "" if len(shown) == len(source) else "\n# (source cut here)"
    return findings or "(none)", f"{shown}{cut}"
