"""A settings error names the variable and the problem on one line, and never echoes a value (secrets)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app as cli_app

SECRET = "sb-service-key-very-secret-0123456789"
LLM = "sk-llm-very-secret-9876543210"


@pytest.mark.parametrize("env,names", [
    ({"ORCH_TENANT_STORE": "supabase", "ORCH_SUPABASE_SERVICE_KEY": SECRET, "ORCH_AGENT_LLM_API_KEY": LLM},
     ["ORCH_SUPABASE_URL", "ORCH_MASTER_KEYS"]),
    ({"ORCH_PORT": "not-a-port", "ORCH_SUPABASE_SERVICE_KEY": SECRET, "ORCH_AGENT_LLM_API_KEY": LLM}, ["ORCH_PORT"]),
    ({"ORCH_MASTER_KEYS": "{not json " + SECRET, "ORCH_AGENT_LLM_API_KEY": LLM}, ["ORCH_MASTER_KEYS"]),
    ({"ORCH_ADMIN_API_KEY": "password", "ORCH_SUPABASE_SERVICE_KEY": SECRET}, ["ORCH_ADMIN_API_KEY"]),
])
@pytest.mark.parametrize("command", [["tenants", "rewrap"], ["reconcile", "--once", "--dry-run"]])
def test_settings_error_is_one_line_without_values(
    env: dict[str, str], names: list[str], command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(cli_app, command)
    assert result.exit_code == 2, result.output
    text = result.stderr
    assert SECRET not in text and LLM not in text and "password" not in text and "input_value" not in text
    assert len(text.strip().splitlines()) == 1, text
    for name in names:
        assert name in text, text
