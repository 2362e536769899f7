"""A Docker claim whose answer is lost and retried (engine_retry in DockerAPI._call) stays one claim.

The engine runs here, but it cannot be made to lose an answer on cue: this fake stands in for docker-py's low-level
API at exactly the calls the claim makes (create_volume, rename, inspect_container, remove_volume).
"""

from __future__ import annotations

import asyncio

import pytest
import requests
from docker.errors import NotFound

from orchestrator.core.models import ContainerInfo, ContainerStatus
from orchestrator.rules import pool as rules
from orchestrator.runtime import MemberGone
from orchestrator.runtime.docker.pool import PooledDockerRuntime


class LosingAPI:
    """A daemon whose first rename succeeds but whose answer never arrives (a read timeout)."""

    def __init__(self, *, lose_first_rename: bool) -> None:
        self.volumes: dict[str, dict[str, str]] = {}
        self.names = {"pool_s_p_1": "m1"}  # name -> container id
        self.calls: list[str] = []
        self._lose = lose_first_rename

    def create_volume(self, *, name: str, labels: dict[str, str]) -> dict[str, object]:
        self.calls.append("create_volume")
        self.volumes.setdefault(name, labels)  # the engine keeps the first create's labels
        return {"Name": name, "Labels": self.volumes[name]}

    def rename(self, old: str, new: str) -> None:
        self.calls.append("rename")
        if old not in self.names:
            raise NotFound("no such container")
        self.names[new] = self.names.pop(old)
        if self._lose:
            self._lose = False
            raise requests.exceptions.ReadTimeout("read timed out")

    def inspect_container(self, name: str) -> dict[str, str]:
        self.calls.append("inspect_container")
        if name not in self.names:
            raise NotFound("no such container")
        return {"Id": self.names[name]}

    def remove_volume(self, name: str, force: bool = False) -> None:
        self.calls.append("remove_volume")
        self.volumes.pop(name, None)


def runtime(api: LosingAPI) -> PooledDockerRuntime:
    rt = PooledDockerRuntime(retries=3)
    rt._client = type("Client", (), {"api": api})()  # type: ignore[assignment]
    return rt


MEMBER = ContainerInfo(id="m1", name="pool_s_p_1", status=ContainerStatus.running, labels={rules.POOL: "p"})


def test_a_claim_whose_rename_answer_was_lost_is_still_the_claim() -> None:
    api = LosingAPI(lose_first_rename=True)
    claimed = asyncio.run(runtime(api).claim_member(MEMBER, name="agent_c_farah_r1", labels={"k": "v"}))
    assert claimed.name == "agent_c_farah_r1" and api.names == {"agent_c_farah_r1": "m1"}
    # The retry found its own record (one nonce for every attempt) and its own rename: nothing undone.
    assert api.calls == ["create_volume", "rename", "create_volume", "rename", "inspect_container"]
    assert list(api.volumes) == [rules.record_name("m1")]


def test_a_member_another_claimant_renamed_is_gone_for_us() -> None:
    api = LosingAPI(lose_first_rename=False)
    api.names = {"agent_c_farah_other": "m1"}  # renamed by another process (its record is elsewhere: stale read)
    with pytest.raises(MemberGone):
        asyncio.run(runtime(api).claim_member(MEMBER, name="agent_c_farah_r1", labels={"k": "v"}))
    assert api.volumes == {}  # our record undone
