"""The agent container's environment parsing: every bad variable is named, secrets never shown."""

from __future__ import annotations

import base64
import json

import pytest

from agent_image.config import ConfigError, Mode, parse_agent_config, parse_env


def fake_jwt(claims: dict[str, object]) -> str:
    """Only the payload matters to the agent (LiveKit verifies the signature)."""
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")  # noqa: E731
    return f"{enc({'alg': 'HS256'})}.{enc(claims)}.c2ln"


GOOD_CLAIMS = {"sub": "agent-farah", "video": {"roomJoin": True, "room": "r1", "agent": True}, "kind": "agent"}


def good_env(**overrides: str) -> dict[str, str]:
    env = {
        "LIVEKIT_URL": "ws://127.0.0.1:7880",
        "LIVEKIT_ROOM": "r1",
        "LIVEKIT_TOKEN": fake_jwt(GOOD_CLAIMS),
        "AGENT_MODE": "text",
        "AGENT_CONFIG": json.dumps({"id": "a1", "slug": "farah", "name": "Farah", "greeting": "Hi"}),
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


def test_good_env_parses_with_defaults() -> None:
    env = parse_env(good_env())
    assert env.mode is Mode.text
    assert env.agent.identity == "agent-farah"
    assert env.agent.voice == "alloy"
    assert (env.grace_s, env.failsafe_margin_s, env.failsafe_after_s) == (60.0, 30.0, 90.0)
    assert env.llm_key_env == "OPENAI_API_KEY" and not env.uses_llm


def test_token_never_in_repr() -> None:
    env = parse_env(good_env(OPENAI_API_KEY="sk-very-secret"))
    assert env.uses_llm
    assert env.llm_api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(env)
    assert env.token not in repr(env)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"LIVEKIT_TOKEN": "<unset>"}, "LIVEKIT_TOKEN is missing"),
        ({"LIVEKIT_TOKEN": "  "}, "LIVEKIT_TOKEN is missing"),
        ({"LIVEKIT_URL": "<unset>"}, "LIVEKIT_URL is missing"),
        ({"LIVEKIT_URL": "127.0.0.1:7880"}, "LIVEKIT_URL must start with"),
        ({"LIVEKIT_ROOM": "<unset>"}, "LIVEKIT_ROOM is missing"),
        ({"AGENT_CONFIG": "<unset>"}, "AGENT_CONFIG is missing"),
        ({"AGENT_CONFIG": "{not json"}, "AGENT_CONFIG is not valid JSON"),
        ({"AGENT_CONFIG": "[1, 2]"}, "AGENT_CONFIG must be a JSON object"),
        ({"AGENT_CONFIG": '{"slug": "farah"}'}, "AGENT_CONFIG.name is missing"),
        ({"AGENT_CONFIG": '{"slug": "Farah_X", "name": "F"}'}, "AGENT_CONFIG.slug must be"),
        ({"AGENT_CONFIG": '{"slug": "farah", "name": 3}'}, "AGENT_CONFIG.name must be a string"),
        ({"AGENT_MODE": "video"}, "AGENT_MODE must be 'voice' or 'text'"),
        ({"AGENT_GRACE_SECONDS": "soon"}, "AGENT_GRACE_SECONDS must be a number"),
        ({"AGENT_GRACE_SECONDS": "-1"}, "AGENT_GRACE_SECONDS must be a finite number"),
        ({"AGENT_GRACE_SECONDS": "nan"}, "AGENT_GRACE_SECONDS must be a finite number"),
        ({"AGENT_CONNECT_TIMEOUT_SECONDS": "0"}, "AGENT_CONNECT_TIMEOUT_SECONDS must be"),
        ({"LIVEKIT_TOKEN": "not-a-jwt"}, "LIVEKIT_TOKEN is not a JWT"),
        ({"LIVEKIT_TOKEN": "a.!!!.c"}, "LIVEKIT_TOKEN is not a JWT"),
        ({"LIVEKIT_TOKEN": fake_jwt({**GOOD_CLAIMS, "sub": "agent-clarence"})}, "is for identity 'agent-clarence'"),
        ({"LIVEKIT_TOKEN": fake_jwt({**GOOD_CLAIMS, "video": {"roomJoin": True, "room": "r2"}})}, "does not grant joining room 'r1'"),
        ({"LIVEKIT_TOKEN": fake_jwt({**GOOD_CLAIMS, "video": {"room": "r1"}})}, "does not grant joining room 'r1'"),
    ],
)
def test_bad_env_names_the_variable(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_env(good_env(**overrides))


def test_bad_token_error_does_not_echo_it() -> None:
    token = "abc.def"  # two parts: not a JWT
    with pytest.raises(ConfigError) as info:
        parse_env(good_env(LIVEKIT_TOKEN=token))
    assert token not in str(info.value)


@pytest.mark.parametrize(
    ("env_extra", "config_extra", "key_env", "uses_llm"),
    [
        ({}, {}, "OPENAI_API_KEY", False),
        ({"OPENAI_API_KEY": "sk-1"}, {}, "OPENAI_API_KEY", True),
        ({"OPENAI_API_KEY": "  "}, {}, "OPENAI_API_KEY", False),
        ({"AGENT_LLM_KEY_ENV": "TENANT_KEY", "TENANT_KEY": "k"}, {}, "TENANT_KEY", True),
        ({"AGENT_LLM_KEY_ENV": "TENANT_KEY", "OPENAI_API_KEY": "sk"}, {}, "TENANT_KEY", False),
        ({"FARAH_KEY": "k"}, {"llm_key_env": "FARAH_KEY"}, "FARAH_KEY", True),
    ],
)
def test_llm_key_selection(env_extra: dict[str, str], config_extra: dict[str, str], key_env: str, uses_llm: bool) -> None:
    config = json.dumps({"slug": "farah", "name": "Farah", **config_extra})
    env = parse_env({**good_env(AGENT_CONFIG=config), **env_extra})
    assert (env.llm_key_env, env.uses_llm) == (key_env, uses_llm)


def test_agent_config_defaults_and_unknown_keys() -> None:
    cfg = parse_agent_config(json.dumps({"slug": " farah ", "name": "Farah", "voice": "", "extra": 1}))
    assert (cfg.id, cfg.slug, cfg.voice, cfg.instructions) == ("farah", "farah", "alloy", "")
