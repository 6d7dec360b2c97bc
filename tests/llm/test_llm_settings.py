"""Settings from AGENTMESH_LLM_* variables."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest

from agentmesh.llm import LLMSettings, ModelPrice, ProviderConfig


def test_no_provider_means_offline() -> None:
    settings = LLMSettings()
    assert settings.providers == []
    assert not settings.configured


def test_single_provider_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMESH_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("AGENTMESH_LLM_MODEL", "claude-3-5-haiku-latest")
    monkeypatch.setenv("AGENTMESH_LLM_API_KEY", "k-123456")

    settings = LLMSettings()

    assert settings.configured
    (provider,) = settings.providers
    assert provider.kind == "anthropic"
    assert provider.name == "anthropic:claude-3-5-haiku-latest"
    assert provider.base_url == "https://api.anthropic.com"
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "k-123456"


def test_single_provider_form_for_a_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMESH_LLM_PROVIDER", "openai")
    monkeypatch.setenv("AGENTMESH_LLM_MODEL", "llama3.1:8b")
    monkeypatch.setenv("AGENTMESH_LLM_BASE_URL", "http://ollama:11434/v1/")

    (provider,) = LLMSettings().providers

    assert provider.base_url == "http://ollama:11434/v1"
    assert provider.api_key is None


def test_api_key_file_is_read_at_load_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "openai.key"
    key_file.write_text("  from-file-key\n")
    monkeypatch.setenv("AGENTMESH_LLM_PROVIDER", "openai")
    monkeypatch.setenv("AGENTMESH_LLM_MODEL", "gpt-4o")
    monkeypatch.setenv("AGENTMESH_LLM_API_KEY_FILE", str(key_file))

    settings = LLMSettings()
    key_file.write_text("changed later")  # already read

    api_key = settings.providers[0].api_key
    assert api_key is not None
    assert api_key.get_secret_value() == "from-file-key"


def test_chain_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AGENTMESH_LLM_PROVIDERS",
        """[
          {"kind": "openai", "base_url": "http://vllm:8000/v1", "model": "qwen2.5-7b",
           "max_retries": 0, "read_timeout": 30, "temperature": 0.1,
           "input_price_per_mtok": 0, "output_price_per_mtok": 0},
          {"kind": "anthropic", "model": "claude-sonnet-4-20250514", "name": "backup",
           "api_key": "k-abcdef"}
        ]""",
    )
    monkeypatch.setenv("AGENTMESH_LLM_CIRCUIT_COOLDOWN", "5")
    monkeypatch.setenv("AGENTMESH_LLM_REQUEST_TIMEOUT", "45")

    settings = LLMSettings()

    first, second = settings.providers
    assert (first.name, first.max_retries, first.read_timeout) == ("openai:qwen2.5-7b", 0, 30)
    assert first.price == ModelPrice(input_per_mtok=0, output_per_mtok=0)
    assert (second.name, second.base_url) == ("backup", "https://api.anthropic.com")
    assert settings.circuit_cooldown == 5
    assert settings.request_timeout == 45


def test_price_overrides_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AGENTMESH_LLM_PRICES", '{"my-model": {"input_per_mtok": 1, "output_per_mtok": 2}}'
    )
    assert LLMSettings().prices == {"my-model": ModelPrice(input_per_mtok=1, output_per_mtok=2)}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTMESH_LLM_MODEL": "gpt-4o"}, "provider (AGENTMESH_LLM_PROVIDER"),
        ({"AGENTMESH_LLM_PROVIDER": "openai"}, "model (AGENTMESH_LLM_MODEL) is not"),
        ({"AGENTMESH_LLM_PROVIDER": "gemini", "AGENTMESH_LLM_MODEL": "x"}, "openai"),
        (
            {
                "AGENTMESH_LLM_PROVIDERS": '[{"kind": "openai", "model": "a"}]',
                "AGENTMESH_LLM_MODEL": "b",
            },
            "not both",
        ),
        (
            {
                "AGENTMESH_LLM_PROVIDERS": (
                    '[{"kind": "openai", "model": "a"}, {"kind": "openai", "model": "a"}]'
                )
            },
            "unique",
        ),
    ],
)
def test_inconsistent_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError, match=re.escape(message)):
        LLMSettings()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"api_key": "a-key", "api_key_file": "/x"}, "not both"),
        ({"api_key_file": "/nonexistent/key"}, "cannot be read"),
        ({"base_url": "localhost:8000"}, "http"),
        ({"input_price_per_mtok": 1.0}, "both"),
        ({"max_retries": -1}, "max_retries"),
        ({"model": ""}, "model"),
    ],
)
def test_invalid_provider_configs(fields: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        ProviderConfig.model_validate({"kind": "openai", "model": "m", **fields})


def test_empty_key_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(pydantic.ValidationError, match="is empty"):
        ProviderConfig(kind="openai", model="m", api_key_file=empty)
