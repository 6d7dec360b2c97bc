"""Gateway configuration: YAML plus environment overrides, validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.gateway.config import ConfigError, GatewaySettings, load_config
from agentmesh.runtime.settings import load_settings


def test_yaml_and_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "agents:\n"
        "  summarizer:\n    address: 127.0.0.1:6000\n"
        "  qa:\n    address: dns:///qa.mesh.svc:50051\n    skills: [answer]\n    timeout: 5\n"
    )
    env = {
        "AGENTMESH_AGENT_SUMMARIZER_ADDRESSES": "127.0.0.1:7000, 127.0.0.1:7001",
        "AGENTMESH_AGENT_CODE_REVIEWER_ADDRESSES": "127.0.0.1:7002",
        "AGENTMESH_AGENT_CODE_REVIEWER_SKILLS": "review",
        "UNRELATED": "x",
    }
    config = load_config(path, env)
    assert config.agents["summarizer"].addresses == ["127.0.0.1:7000", "127.0.0.1:7001"]
    assert config.agents["qa"].addresses == ["dns:///qa.mesh.svc:50051"]
    assert config.agents["qa"].timeout == 5
    assert config.agents["code-reviewer"].skills == ["review"]


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("agents:\n  Bad_Name:\n    address: a:1\n", "agent name 'Bad_Name'"),
        ("agents:\n  qa:\n    addresses: []\n", "agents.qa.addresses"),
        ("agents:\n  qa:\n    address: a:1\n    colour: red\n", "agents.qa.colour"),
        ("agents:\n  qa:\n    addresses: [dns:///a:1, b:2]\n", "only address"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("agents: [unclosed\n", "not valid YAML"),
        ("agents:\n  qa:\n    address: http://a:1/\n", "a gRPC agent's addresses are host:port"),
        (
            "agents:\n  qa:\n    address: a:1\n    a2a: jsonrpc\n",
            "must be http:// or https:// URLs",
        ),
        ("agents:\n  qa:\n    address: http://a/\n    a2a: grpc\n", "A2A grpc agent's addresses"),
        ("agents:\n  qa:\n    address: a:1\n    a2a: rest\n", "agents.qa.a2a.binding"),
        (
            "agents:\n  qa:\n    address: a:1\n    a2a: {binding: grpc, card_url: a/card}\n",
            "card_url 'a/card' must be an http:// or https:// URL",
        ),
        (
            "agents:\n  qa:\n    address: a:1\n    a2a: {binding: grpc, headers: {X Key: v}}\n",
            "header name 'X Key'",
        ),
        (
            "agents:\n  qa:\n    address: a:1\n    a2a: {binding: grpc, headers: {k: '${NOPE}'}}\n",
            "agents.qa.a2a.headers.k: environment variable NOPE is not set",
        ),
    ],
)
def test_invalid_config_names_the_problem(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert fragment in str(info.value)


def test_external_a2a_agents_from_yaml_and_env(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "agents:\n"
        "  currency:\n    address: https://currency.example/a2a\n"
        "    a2a: {binding: jsonrpc, headers: {x-api-key: 'key-${CURRENCY_KEY}'}}\n"
        "  translator:\n    address: 127.0.0.1:50070\n    a2a: grpc\n"
    )
    env = {
        "CURRENCY_KEY": "s3cret",
        "AGENTMESH_AGENT_WEATHER_ADDRESSES": "http://127.0.0.1:9000/",
        "AGENTMESH_AGENT_WEATHER_A2A": "jsonrpc",
        "AGENTMESH_AGENT_TRANSLATOR_A2A": "grpc",
    }
    config = load_config(path, env)
    currency = config.agents["currency"]
    assert currency.a2a is not None
    assert (currency.a2a.binding, currency.a2a.headers) == ("jsonrpc", {"x-api-key": "key-s3cret"})
    assert currency.protocol == "a2a/jsonrpc"
    assert config.agents["translator"].protocol == "a2a/grpc"
    assert config.agents["weather"].protocol == "a2a/jsonrpc"
    assert config.agents["weather"].addresses == ["http://127.0.0.1:9000/"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read gateway config"):
        load_config(tmp_path / "absent.yaml", {})


def test_settings_flags_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMESH_PORT", "6001")
    monkeypatch.setenv("AGENTMESH_DEFAULT_TIMEOUT", "12")
    monkeypatch.setenv("AGENTMESH_LOG_FORMAT", "text")
    settings = load_settings(GatewaySettings, ["--port", "6002", "--reflection", "false"])
    assert settings.port == 6002
    assert settings.default_timeout == 12
    assert settings.log_format == "text"
    assert settings.reflection is False


def test_bad_setting_exits_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_settings(GatewaySettings, ["--port", "70000"])
    assert info.value.code == 2
    assert "port" in capsys.readouterr().err
