"""The deployment's ownership signing key: ORCH_OWNERSHIP_KEY, else a key generated once into the deployment's state.

Every process of one deployment must sign with the same key. On one host they share the generated file
(`ORCH_OWNERSHIP_KEY_FILE`, default `~/.local/state/agent-orchestrator/ownership.key`, mode 0600,
created atomically so two processes starting together agree); across hosts (Swarm, Kubernetes) the
operator sets ORCH_OWNERSHIP_KEY from a secret. The key never leaves this process: no label, env or log.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path

from orchestrator.core.errors import ConfigurationError
from orchestrator.settings import Settings

log = logging.getLogger(__name__)
_loaded: dict[tuple[str, str], bytes] = {}


def key_file(settings: Settings) -> Path:
    if settings.ownership_key_file is not None:
        return settings.ownership_key_file
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    # One key per host, not per scope: deployments of one operator on one host accept each other's rooms.
    return base / "agent-orchestrator" / "ownership.key"


def signing_key(settings: Settings) -> bytes:
    """The key (read or generated once per process and path)."""
    if settings.ownership_key is not None:
        return settings.ownership_key.get_secret_value().encode()
    path = key_file(settings)
    cache = (str(path), settings.scope)
    if cache not in _loaded:
        _loaded[cache] = _read_or_create(path)
    return _loaded[cache]


def _read_or_create(path: Path) -> bytes:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            # Written aside, then linked into place: link fails if another process won, and nobody reads half a key.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
            try:
                os.link(tmp, path)
                log.info("generated the ownership signing key in %s (set ORCH_OWNERSHIP_KEY to share one across hosts)", path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        text = path.read_text().strip()
        if len(text) < 32:
            raise ConfigurationError(f"ORCH_OWNERSHIP_KEY_FILE={path} holds no usable key; remove it or set ORCH_OWNERSHIP_KEY")
        return text.encode()
    except OSError as exc:
        raise ConfigurationError(
            f"ORCH_OWNERSHIP_KEY_FILE={path}: cannot read or create the ownership signing key ({exc.strerror}); "
            "set ORCH_OWNERSHIP_KEY or point ORCH_OWNERSHIP_KEY_FILE at a writable path"
        ) from None
