"""The agent's configuration, parsed from its environment (pure: no I/O, no SDK)."""

from __future__ import annotations

import base64
import enum
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
DEFAULT_LLM_KEY_ENV = "OPENAI_API_KEY"


class ConfigError(ValueError):
    """The container was started with configuration it cannot run with; the message names the variable."""


class Mode(str, enum.Enum):
    voice = "voice"
    text = "text"


@dataclass(frozen=True)
class AgentConfig:
    """What the tenant defined for this agent (orchestrator's Agent.public_config)."""

    id: str
    slug: str
    name: str
    instructions: str = ""
    voice: str = "alloy"
    greeting: str = ""
    model: str = ""
    llm_key_env: str = ""  # optional: the env var holding this agent's LLM key

    @property
    def identity(self) -> str:
        """Must match the identity in the orchestrator's token (naming.agent_identity)."""
        return f"agent-{self.slug}"


@dataclass(frozen=True)
class AgentEnv:
    """Everything the container is told, validated. `token` and `llm_api_key` never appear in repr."""

    livekit_url: str
    room: str
    token: str = field(repr=False)
    mode: Mode
    agent: AgentConfig
    grace_s: float
    failsafe_margin_s: float
    connect_timeout_s: float
    unhealthy_after_s: float
    health_file: str
    llm_key_env: str
    llm_api_key: str = field(default="", repr=False)

    @property
    def failsafe_after_s(self) -> float:
        return self.grace_s + self.failsafe_margin_s

    @property
    def uses_llm(self) -> bool:
        return bool(self.llm_api_key)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is missing or empty")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name} must be a finite number of seconds >= {minimum:g}, got {raw!r}")
    return value


def parse_agent_config(raw: str) -> AgentConfig:
    """AGENT_CONFIG: a JSON object with at least `slug` and `name`; unknown keys are ignored."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"AGENT_CONFIG is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"AGENT_CONFIG must be a JSON object, got {type(data).__name__}")
    values: dict[str, str] = {}
    for key in ("id", "slug", "name", "instructions", "voice", "greeting", "model", "llm_key_env"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"AGENT_CONFIG.{key} must be a string, got {type(value).__name__}")
        values[key] = value.strip() if key in ("slug", "id", "llm_key_env", "voice", "model") else value
    slug = values.get("slug", "")
    if not SLUG_RE.fullmatch(slug) or len(slug) > 63:
        raise ConfigError(f"AGENT_CONFIG.slug must be lowercase words joined by dashes (e.g. clarence-coherence), got {slug!r}")
    if not values.get("name", "").strip():
        raise ConfigError("AGENT_CONFIG.name is missing or empty")
    values.setdefault("id", slug)
    if not values.get("voice"):
        values.pop("voice", None)
    return AgentConfig(**values)


def jwt_claims(token: str) -> dict[str, Any]:
    """The unverified payload of a JWT: only to catch a token minted for another agent or room early."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ConfigError("LIVEKIT_TOKEN is not a JWT (expected three dot-separated parts)")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, json.JSONDecodeError):
        raise ConfigError("LIVEKIT_TOKEN is not a JWT (its payload is not base64 JSON)") from None
    if not isinstance(claims, dict):
        raise ConfigError("LIVEKIT_TOKEN is not a JWT (its payload is not a JSON object)")
    return claims


def check_token(claims: Mapping[str, Any], *, identity: str, room: str) -> None:
    """The token must let this agent join this room under its own identity."""
    if claims.get("sub") != identity:
        raise ConfigError(f"LIVEKIT_TOKEN is for identity {claims.get('sub')!r}, expected {identity!r}")
    grant = claims.get("video") or {}
    if not grant.get("roomJoin") or grant.get("room") != room:
        raise ConfigError(f"LIVEKIT_TOKEN does not grant joining room {room!r}")


def parse_env(env: Mapping[str, str]) -> AgentEnv:
    """Validate the container environment; raises ConfigError naming the first bad variable."""
    url = _required(env, "LIVEKIT_URL")
    if not re.match(r"^(wss?|https?)://[^\s/]+", url):
        raise ConfigError(f"LIVEKIT_URL must start with ws://, wss://, http:// or https://, got {url!r}")
    room = _required(env, "LIVEKIT_ROOM")
    token = _required(env, "LIVEKIT_TOKEN")
    mode_raw = env.get("AGENT_MODE", "voice").strip() or "voice"
    try:
        mode = Mode(mode_raw)
    except ValueError:
        raise ConfigError(f"AGENT_MODE must be 'voice' or 'text', got {mode_raw!r}") from None
    agent = parse_agent_config(_required(env, "AGENT_CONFIG"))
    check_token(jwt_claims(token), identity=agent.identity, room=room)
    key_env = agent.llm_key_env or env.get("AGENT_LLM_KEY_ENV", "").strip() or DEFAULT_LLM_KEY_ENV
    return AgentEnv(
        livekit_url=url,
        room=room,
        token=token,
        mode=mode,
        agent=agent,
        grace_s=_seconds(env, "AGENT_GRACE_SECONDS", 60.0),
        failsafe_margin_s=_seconds(env, "AGENT_FAILSAFE_MARGIN_SECONDS", 30.0),
        connect_timeout_s=_seconds(env, "AGENT_CONNECT_TIMEOUT_SECONDS", 15.0, minimum=0.5),
        unhealthy_after_s=_seconds(env, "AGENT_UNHEALTHY_AFTER_SECONDS", 15.0),
        health_file=env.get("AGENT_HEALTH_FILE", "").strip() or "/tmp/agent-health.json",
        llm_key_env=key_env,
        llm_api_key=env.get(key_env, "").strip(),
    )
