"""The host filter on real parts: a fresh agent on a network the orchestrator made reaches LiveKit's port on the
gateway and no other service of the host, even one bound to 0.0.0.0; the filter is idempotent, visible and removed."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from devtools import isolation_probe
from devtools.agent_room import eventually
from devtools.host_service import host_wide_http
from devtools.livekit_server import LiveKitServer, free_port
from devtools.world import CLIENT_ID, app_client, write_tenants
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import LiveKitCredentials
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.services.agent_networks import AgentNetworks
from orchestrator.settings import Settings

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(180)]
AGENT_IMAGE = "agent-orchestrator/agent:latest"
PROBE = Path(isolation_probe.__file__)


def _low_free_port() -> int:
    """A free port below the kernel's ephemeral range (the harness lets agents reach that range for its LiveKits)."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for port in range(low - 1, 1024, -1):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free low port")


@pytest.fixture
def host_service() -> Iterator[int]:
    with host_wide_http(_low_free_port()) as port:
        yield port


def _host_addresses() -> list[str]:
    """The host's own non-loopback IPv4 addresses outside Docker's bridges (each is INPUT for an agent, too)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()
            if line.split()[1] != "lo" and not line.split()[1].startswith(("docker", "br-", "oa-", "veth"))][:2]


def _our_rules(bridge: str) -> list[str]:
    return [r for r in subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout.splitlines()
            if f"ORCH-AGENTS-{bridge}" in r or f"ORCH-EGRESS-{bridge}" in r]


async def test_a_fresh_agent_reaches_livekit_and_no_other_host_service(
    scope: str, tmp_path: Path, docker_client: docker.DockerClient, host_service: int,
) -> None:
    docker_client.images.get(AGENT_IMAGE)  # built by scripts/build-images; missing is a failure, not a skip
    lk = LiveKitServer(api_key="filterkey", api_secret="s" * 40, port=free_port(), rtc_tcp_port=free_port(),
                       rtc_udp_port=free_port(socket.SOCK_DGRAM))
    settings = Settings(
        scope=scope, agent_network="", agent_image=AGENT_IMAGE, agent_memory="512m", reconcile_enabled=False,
        tenants_file=tmp_path / "tenants.yaml",
        agent_host_ports=[f"{lk.port}/tcp", f"{lk.rtc_tcp_port}/tcp", f"{lk.rtc_udp_port}/udp"],
    )
    runtime = DockerRuntime()
    try:
        # The network and its filter, as `serve` makes them at start; a second process's start changes nothing.
        net = await AgentNetworks(settings=settings, provider=runtime).for_client(None)
        assert net.managed and net.bridge and net.gateway
        installed = _our_rules(net.bridge)
        assert f"-A INPUT -i {net.bridge} -j ORCH-AGENTS-{net.bridge}" in installed
        assert installed[-1] == f"-A ORCH-AGENTS-{net.bridge} -j DROP"
        started = time.perf_counter()
        changed, what = await runtime.install_host_filter(net, ports=_ports(settings), egress="internet")
        recheck_ms = (time.perf_counter() - started) * 1000
        assert changed is False and f"--dport {lk.port}" in what and _our_rules(net.bridge) == installed
        print(f"\nhost filter re-check on start: {recheck_ms:.1f} ms")

        lk.agent_gateway = net.gateway
        lk.start()
        write_tenants(settings.tenants_file, lk)
        creds = LiveKitCredentials(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret)
        gateway = LiveKitGateway()
        try:
            async with app_client(settings) as api:
                r = await api.post("/api/v1/trigger-agent", json={
                    "agent_slug": "farah", "room_name": f"{scope}-filter", "user_id": "u", "client_id": CLIENT_ID})
                assert r.status_code == 201, r.text
                name = r.json()["container_name"]

            async def listed() -> bool:
                return any(p.identity == "agent-farah" for p in await gateway.list_participants(creds, room=f"{scope}-filter"))

            await eventually(listed, timeout=40, what="the agent joined through LiveKit on the gateway")
        finally:
            await gateway.aclose()
        # Positive control from the host: the service answers (so an unreachable one means the filter).
        assert httpx.get(f"http://127.0.0.1:{host_service}/", timeout=5).status_code == 200
        targets = {"gateway": net.gateway, "livekit_port": lk.port, "host_service_ports": [host_service],
                   "host_addresses": _host_addresses()}
        result = _probe(docker_client, name, targets)
        print("probe (filter on):", json.dumps(result["must_fail"], indent=1))
        reached = {k: v for k, v in result["must_fail"].items() if v["ok"]}
        assert not reached, f"an agent reached what it must not: {reached}"
        assert result["must_work"]["livekit_http"]["ok"] and result["must_work"]["livekit_validate_own_token"]["ok"], result

        # The probe can tell: without the filter the same agent reaches the host service through the gateway.
        assert await runtime.remove_host_filter(net) is True and _our_rules(net.bridge) == []
        open_result = _probe(docker_client, name, targets)
        assert open_result["must_fail"][f"host_service_{host_service}_{net.gateway}"]["ok"], open_result
        # Installed again (idempotent from nothing), then removed with the network by `orchestrator network --remove`.
        assert (await runtime.install_host_filter(net, ports=_ports(settings), egress="livekit-only"))[0] is True
        assert any("DOCKER-USER" in r for r in _our_rules(net.bridge))
        docker_client.api.remove_container(name, force=True)

        async def detached() -> bool:  # the engine lets go of a removed container's endpoint a moment later under load
            return not (docker_client.api.inspect_network(net.name).get("Containers") or {})

        await eventually(detached, timeout=30, what=f"no container left on {net.name}")
        await runtime.remove_network(net)
        assert _our_rules(net.bridge) == []
    finally:
        runtime.close()
        lk.stop()


def _ports(settings: Settings) -> list:  # type: ignore[type-arg]
    from orchestrator.rules.isolation import parse_host_port

    return [parse_host_port(p) for p in settings.agent_host_ports]


def _probe(client: docker.DockerClient, container: str, targets: dict[str, object]) -> dict:  # type: ignore[type-arg]
    res = client.containers.get(container).exec_run(["python3", "-c", PROBE.read_text(), json.dumps(targets)])
    output = (res.output or b"").decode(errors="replace")
    assert res.exit_code == 0, output
    return json.loads(output.strip().splitlines()[-1])
