"""Configuration of the provider chain, read from ``AGENTMESH_LLM_*`` variables.

Two forms, which must not be mixed:

* the chain, as JSON in ``AGENTMESH_LLM_PROVIDERS``, a list of
  :class:`ProviderConfig` objects tried in order::

      AGENTMESH_LLM_PROVIDERS='[
        {"kind": "openai", "base_url": "http://vllm:8000/v1", "model": "qwen2.5-7b"},
        {"kind": "anthropic", "model": "claude-3-5-haiku-latest",
         "api_key_file": "/run/secrets/anthropic"}]'

* one provider: ``AGENTMESH_LLM_PROVIDER`` (openai|anthropic|mock),
  ``AGENTMESH_LLM_MODEL``, and optionally ``AGENTMESH_LLM_BASE_URL``,
  ``AGENTMESH_LLM_API_KEY`` or ``AGENTMESH_LLM_API_KEY_FILE``.

Kind ``mock`` is a model that answers offline (see ``agentmesh.llm._mock``);
it needs no model name, URL or key: ``AGENTMESH_LLM_PROVIDER=mock``.

Neither set means no provider: :attr:`LLMSettings.configured` is false and
agents run offline. API keys are ``SecretStr``: they never show in ``repr``,
and validation errors are built with ``hide_input_in_errors`` so a bad entry
does not echo the key back.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentmesh.llm._pricing import ModelPrice

ProviderKind = Literal["openai", "anthropic", "mock"]

#: The model name of the ``mock`` kind when none is given.
MOCK_MODEL = "mock"

DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


def _default_name(kind: object, model: object) -> str:
    return f"{kind}:{model}"


def _mask_key(data: Any) -> Any:
    """``data`` with a plain-string ``api_key`` wrapped in a SecretStr."""
    if isinstance(data, dict) and isinstance(data.get("api_key"), str):
        return {**data, "api_key": SecretStr(data["api_key"])}
    return data


def _read_key_file(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"api_key_file {str(path)!r} cannot be read: {exc.strerror}") from None
    if not key:
        raise ValueError(f"api_key_file {str(path)!r} is empty")
    return key


class ProviderConfig(BaseModel):
    """One provider of the chain.

    ``kind`` "openai" is any OpenAI-compatible chat-completions server (OpenAI,
    vLLM, Ollama, llama.cpp, LM Studio, OpenRouter): requests go to
    ``{base_url}/chat/completions``, so ``base_url`` usually ends in ``/v1``.
    ``kind`` "anthropic" is the Anthropic Messages API at
    ``{base_url}/v1/messages``.

    ``name`` identifies the provider in attempts, logs and errors; it defaults
    to ``"{kind}:{model}"``. ``api_key_file`` is read (and stripped) when the
    configuration is loaded. Timeouts are in seconds: ``read_timeout`` bounds
    each read, not the whole call (callers pass an overall timeout/deadline).
    ``max_retries`` counts retries after the first request; backoff is
    exponential from ``backoff_initial`` up to ``backoff_max`` with full
    jitter, at least the server's Retry-After, and a Retry-After longer than
    ``max_retry_after`` ends the retries for this provider.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    kind: ProviderKind
    model: str = Field(min_length=1)
    name: str = Field(default="", description="defaults to '{kind}:{model}'")
    base_url: str = Field(default="", description="defaults to the vendor's public API")
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0.0)
    read_timeout: float = Field(default=120.0, gt=0.0)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_initial: float = Field(default=0.5, ge=0.0)
    backoff_max: float = Field(default=20.0, ge=0.0)
    max_retry_after: float = Field(default=60.0, ge=0.0)
    input_price_per_mtok: float | None = Field(default=None, ge=0.0)
    output_price_per_mtok: float | None = Field(default=None, ge=0.0)

    # Validators are "before" validators on purpose: pydantic reports the raw
    # input of a failing model and of "after" validators in ``errors()``, so the
    # key is wrapped in a SecretStr (by _mask_key, which runs first) before any
    # check can fail, and every check runs on that masked input.

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("kind") == "mock" and not data.get("model"):
            data["model"] = MOCK_MODEL
        kind, model = data.get("kind"), data.get("model")
        if not data.get("name") and isinstance(kind, str) and model:
            data["name"] = _default_name(kind, model)
        name = data.get("name")
        if not data.get("base_url") and kind in DEFAULT_BASE_URLS:
            data["base_url"] = DEFAULT_BASE_URLS[kind]
        base_url = data.get("base_url")
        if isinstance(base_url, str):
            if not base_url.startswith(("http://", "https://")):
                raise ValueError(f"provider {name!r}: base_url must start with http:// or https://")
            data["base_url"] = base_url.rstrip("/")
        key_file = data.get("api_key_file")
        if key_file is not None:
            if data.get("api_key") is not None:
                raise ValueError(f"provider {name!r}: set api_key or api_key_file, not both")
            data["api_key"] = SecretStr(_read_key_file(Path(key_file)))
        prices = (data.get("input_price_per_mtok"), data.get("output_price_per_mtok"))
        if (prices[0] is None) != (prices[1] is None):
            raise ValueError(
                f"provider {name!r}: set both input_price_per_mtok and output_price_per_mtok, "
                "or neither"
            )
        return data

    @model_validator(mode="before")
    @classmethod
    def _mask(cls, data: Any) -> Any:
        return _mask_key(data)

    @property
    def price(self) -> ModelPrice | None:
        """The configured price override, if any."""
        if self.input_price_per_mtok is None or self.output_price_per_mtok is None:
            return None
        return ModelPrice(
            input_per_mtok=self.input_price_per_mtok, output_per_mtok=self.output_price_per_mtok
        )


class PromptConfig(BaseModel):
    """A skill's prompt templates as configured: each replaces the built-in one.

    ``system`` (or ``system_file``) is the system message, ``user`` (or
    ``user_file``) the user's turn; files are read when the settings load.
    ``variables`` declares placeholders of the operator's own, filled from the
    request's metadata: a string is the value used when the metadata has none,
    null makes the metadata key required. Which placeholders a template may
    name is checked when the agent loads it (``agentmesh.agents._model``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str | None = None
    system_file: Path | None = None
    user: str | None = None
    user_file: Path | None = None
    variables: dict[str, str | None] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for part in ("system", "user"):
            path = data.get(f"{part}_file")
            if path is None:
                continue
            if data.get(part) is not None:
                raise ValueError(f"set {part} or {part}_file, not both")
            try:
                data[part] = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(
                    f"{part}_file {str(path)!r} cannot be read: {exc.strerror}"
                ) from None
        return data

    @model_validator(mode="after")
    def _valid(self) -> PromptConfig:
        for part in ("system", "user"):
            template = getattr(self, part)
            if template is not None and not string.Template(template).is_valid():
                raise ValueError(
                    f"{part} has an invalid placeholder: write ${{name}}, or $$ for '$'"
                )
        bad = [name for name in self.variables if not name.isidentifier()]
        if bad:
            raise ValueError(f"variables: {bad[0]!r} is not a placeholder name (an identifier)")
        return self


def _problem(loc: tuple[int | str, ...], message: str) -> str:
    message = message.removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in loc)}: {message}" if loc else message


#: A name of the ``models`` allow-list, as a request's ``model`` option gives it.
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


def _model_choice(name: str, entry: Any, providers: list[Any]) -> Any:
    """An entry of ``models`` as a provider config: ``provider`` is a provider kind, or
    the name of a provider of the chain whose settings the entry starts from."""
    if not isinstance(entry, dict) or "provider" not in entry:
        return entry
    entry = dict(entry)
    provider = entry.pop("provider")
    if "kind" in entry:
        raise ValueError(f"models[{name!r}]: set provider or kind, not both")
    chain = {}
    for p in providers:
        config = p.model_dump(exclude={"api_key_file"}) if isinstance(p, ProviderConfig) else p
        if isinstance(config, dict):
            chain[_provider_name(config)] = config
    if provider in chain:
        base = {k: v for k, v in chain[provider].items() if k != "name" and v is not None}
        if "api_key" in entry or "api_key_file" in entry:  # the entry's own key wins
            base.pop("api_key", None)
            base.pop("api_key_file", None)
        return {**base, **entry}
    if provider in ("openai", "anthropic", "mock"):
        return {"kind": provider, **entry}
    known = ", ".join(repr(n) for n in chain if n) or "none"
    raise ValueError(
        f"models[{name!r}]: provider {provider!r} is neither a provider kind (openai, "
        f"anthropic, mock) nor a provider of the chain (names: {known})"
    )


def _provider_name(provider: object) -> str | None:
    if isinstance(provider, ProviderConfig):
        return provider.name
    if isinstance(provider, dict):
        name = provider.get("name")
        if isinstance(name, str) and name:
            return name
        return _default_name(provider.get("kind"), provider.get("model"))
    return None


class LLMSettings(BaseSettings):
    """The provider chain and client-wide knobs (env prefix ``AGENTMESH_LLM_``).

    ``prices`` (``AGENTMESH_LLM_PRICES``, JSON ``{"model": {"input_per_mtok":
    .., "output_per_mtok": ..}}``) overrides or extends the built-in price
    table. ``prompts`` (``AGENTMESH_LLM_PROMPTS``, JSON ``{"agent name":
    "template"}``) replaces agents' built-in role prompts; templates use
    ``${name}`` placeholders filled from request metadata. After
    ``circuit_failure_threshold`` consecutive failed calls a provider is
    skipped for ``circuit_cooldown`` seconds. ``request_timeout`` is the
    overall per-call deadline used when the caller passes none.
    """

    model_config = SettingsConfigDict(
        env_prefix="AGENTMESH_LLM_", extra="ignore", hide_input_in_errors=True
    )

    providers: list[ProviderConfig] = Field(default_factory=list)

    provider: ProviderKind | None = None
    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    api_key_file: Path | None = None

    models: dict[str, ProviderConfig] = Field(default_factory=dict)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    prompts: dict[str, str | PromptConfig] = Field(default_factory=dict)
    circuit_failure_threshold: int = Field(default=3, ge=1)
    circuit_cooldown: float = Field(default=30.0, ge=0.0)
    request_timeout: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _single_provider_form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        providers = data.get("providers") or []
        kind = data.get("provider")
        simple = {k: data.get(k) for k in ("base_url", "model", "api_key", "api_key_file")}
        given = sorted(k for k, v in simple.items() if v is not None)
        if providers:
            if kind is not None or given:
                raise ValueError(
                    "use either providers (AGENTMESH_LLM_PROVIDERS) or the single-provider "
                    "settings (AGENTMESH_LLM_PROVIDER, ..._MODEL, ...), not both"
                )
        elif kind is not None:
            if simple["model"] is None and kind == "mock":
                simple["model"] = MOCK_MODEL
            if simple["model"] is None:
                raise ValueError("provider is set but model (AGENTMESH_LLM_MODEL) is not")
            provider = {"kind": kind, **{k: v for k, v in simple.items() if v is not None}}
            data["providers"] = providers = [provider]
        elif given:
            raise ValueError(
                f"{', '.join(given)} set but provider (AGENTMESH_LLM_PROVIDER: openai or "
                "anthropic) is not"
            )
        models = data.get("models")
        if isinstance(models, dict) and isinstance(providers, list):
            for name in models:
                if not isinstance(name, str) or not re.match(MODEL_NAME, name):
                    raise ValueError(
                        f"models: {str(name)[:64]!r} is not a model name (letters, digits, "
                        "'.', '_', ':' and '-', up to 64)"
                    )
            data["models"] = {
                name: _model_choice(name, entry, providers) for name, entry in models.items()
            }
        names = [_provider_name(p) for p in providers] if isinstance(providers, list) else []
        duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"provider names must be unique, give each a distinct 'name': {duplicates}"
            )
        return data

    @model_validator(mode="before")
    @classmethod
    def _mask_keys(cls, data: Any) -> Any:
        data = _mask_key(data)
        if isinstance(data, dict) and isinstance(data.get("providers"), list):
            data = {**data, "providers": [_mask_key(p) for p in data["providers"]]}
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            data = {**data, "models": {k: _mask_key(v) for k, v in data["models"].items()}}
        return data

    @field_validator("prompts", mode="before")
    @classmethod
    def _valid_templates(cls, prompts: Any) -> Any:
        if not isinstance(prompts, dict):
            return prompts  # pydantic says what is wrong with it
        checked: dict[str, Any] = {}
        for key, template in prompts.items():
            name = str(key)
            agent, _, skill = name.partition("/")
            if not agent or "/" in skill or (not skill and name.endswith("/")):
                raise ValueError(f"prompts[{name!r}]: the key is AGENT or AGENT/SKILL")
            if isinstance(template, str):
                if not string.Template(template).is_valid():
                    raise ValueError(
                        f"prompts[{name!r}] has an invalid placeholder: write ${{name}}, "
                        "or $$ for '$'"
                    )
            elif isinstance(template, dict):
                try:
                    template = PromptConfig.model_validate(template)
                except ValidationError as exc:
                    problems = "; ".join(
                        _problem(e["loc"], e["msg"])
                        for e in exc.errors(include_input=False, include_url=False)
                    )
                    raise ValueError(f"prompts[{name!r}]: {problems}") from None
            elif not isinstance(template, PromptConfig):
                raise ValueError(
                    f"prompts[{name!r}]: a system template (a string) or an object "
                    "{system, system_file, user, user_file, variables}"
                )
            checked[name] = template
        return checked

    @property
    def configured(self) -> bool:
        """False when no provider is configured: agents then run offline."""
        return bool(self.providers)
