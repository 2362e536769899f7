"""The one HTTP helper every API-talking command uses: one set of variables, one way to report failures.

Variables: ORCH_URL (default http://127.0.0.1:$ORCH_PORT) and ORCH_API_KEY (older name ORCH_CLI_API_KEY is
still read). A 503 from a reachable API is reported as such, not as "not reachable".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from orchestrator.cli.failures import FAILED, UNAVAILABLE, CliFailure
from orchestrator.cli.hints import api_down

URL_VARIABLE, KEY_VARIABLE = "ORCH_URL", "ORCH_API_KEY"
KEY_ALIASES = ("ORCH_CLI_API_KEY",)


def default_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('ORCH_PORT') or 8000}"


def env_url() -> str:
    return os.environ.get(URL_VARIABLE) or default_url()


def env_key() -> str | None:
    for name in (KEY_VARIABLE, *KEY_ALIASES):
        if os.environ.get(name):
            return os.environ[name]
    return None


class ApiUnavailable(CliFailure):
    """Nothing answered, or the API answered 503: exit 3."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=UNAVAILABLE)


class ApiRefused(CliFailure):
    """A 4xx (or another non-503 error) from the API: exit 1; `body` is our error body when there is one."""

    def __init__(self, message: str, *, status: int, body: dict[str, Any]) -> None:
        super().__init__(message, code=FAILED)
        self.status = status
        self.body = body


def _body(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {"detail": resp.text[:200]}
    return data if isinstance(data, dict) else {"detail": str(data)[:200]}


@dataclass(frozen=True)
class Api:
    url: str
    key: str | None = None
    timeout_s: float = 60.0

    @classmethod
    def from_env(cls, *, url: str | None = None, key: str | None = None, timeout_s: float = 60.0) -> "Api":
        return cls(url=(url or env_url()).rstrip("/"), key=key or env_key(), timeout_s=timeout_s)

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """(status, body) of a 2xx answer; ApiUnavailable / ApiRefused otherwise. The key never appears in a message."""
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            resp = httpx.request(method, f"{self.url}{path}", json=json, params=params, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise ApiUnavailable(api_down(self.url, f"{type(exc).__name__}: {exc}")) from None
        body = _body(resp)
        if resp.status_code == 503:
            retry = f"; retry after {resp.headers['Retry-After']} s" if "Retry-After" in resp.headers else ""
            raise ApiUnavailable(f"the orchestrator API at {self.url} answered 503: {body.get('detail', 'unavailable')}{retry}")
        if resp.status_code in (401, 403):
            raise ApiRefused(f"the orchestrator API refused the request ({resp.status_code}: {body.get('detail')}); "
                             f"set {KEY_VARIABLE} to an admin key", status=resp.status_code, body=body)
        if resp.status_code >= 400:
            raise ApiRefused(f"error {resp.status_code}: {body.get('detail')}", status=resp.status_code, body=body)
        return resp.status_code, body

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None} or None)[1]

    def post(self, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        return self.call("POST", path, json=body)
