"""Tenant isolation rules: network names, subnet choice, the LiveKit URL agents get, the image allowlist."""

from __future__ import annotations

import hashlib

import pytest

from orchestrator.rules.isolation import (
    AgentNetwork,
    agent_livekit_url,
    api_reachable_by_agents,
    host_port_allows,
    parse_host_port,
    port_of_url,
    gateway_of,
    image_allowed,
    is_root_user,
    network_name,
    otlp_blocked,
    pick_subnet,
    split_image,
)
from orchestrator.settings import Settings

NET = AgentNetwork(name="orch-agents-acme", subnet="172.29.3.0/24", gateway="172.29.3.1")


@pytest.mark.parametrize("configured,client,want", [
    ("", None, "orch-agents-acme"),
    ("my-net", None, "my-net"),
    ("my-net", "c1", "my-net-c" + hashlib.sha256(b"c1").hexdigest()[:12]),
    ("host", None, "host"),
    ("host", "c1", "host"),
])
def test_network_name(configured: str, client: str | None, want: str) -> None:
    assert network_name(configured=configured, scope="acme", client_id=client) == want


def test_per_client_names_differ_and_are_safe() -> None:
    a = network_name(configured="", scope="acme", client_id="df91fd06-816f-4273-a903-5a4861277040")
    b = network_name(configured="", scope="acme", client_id="df91fd06-816f-4273-a903-5a4861277041")
    weird = network_name(configured="", scope="acme", client_id="a b/c")
    assert a != b and a.startswith("orch-agents-acme-c") and len(a) == len("orch-agents-acme-c") + 12
    assert all(ch.isalnum() or ch == "-" for ch in weird)


@pytest.mark.parametrize("pool,prefix,taken,want", [
    (["172.29.0.0/16"], 24, [], "172.29.0.0/24"),
    (["172.29.0.0/16"], 24, ["172.29.0.0/24", "172.29.1.0/24"], "172.29.2.0/24"),
    (["172.29.0.0/16"], 24, ["172.16.0.0/12"], None),  # a wide network elsewhere covers the whole pool
    (["172.29.0.0/23", "10.99.0.0/16"], 24, ["172.29.0.0/23"], "10.99.0.0/24"),
    (["172.29.0.0/16"], 24, ["172.17.0.0/16", "fd00::/64"], "172.29.0.0/24"),
    (["10.1.2.0/24"], 16, [], "10.1.2.0/24"),  # prefix wider than the block: the block itself
])
def test_pick_subnet(pool: list[str], prefix: int, taken: list[str], want: str | None) -> None:
    assert pick_subnet(pool=pool, prefix=prefix, taken=taken) == want


@pytest.mark.parametrize("spec, want", [
    ("7880", "7880/tcp"), ("7880/TCP", "7880/tcp"), ("7882/udp", "7882/udp"), ("50000-60000/udp", "50000-60000/udp"),
    (" 443/tcp ", "443/tcp"), ("7-7/udp", "7/udp"),
])
def test_host_ports_parse(spec: str, want: str) -> None:
    assert str(parse_host_port(spec)) == want


@pytest.mark.parametrize("spec", ["", "x", "7880/sctp", "0", "70000", "60000-50000/udp", "1-2-3", "7880/"])
def test_bad_host_ports_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(spec)


def test_settings_check_host_ports_and_egress() -> None:
    assert Settings(agent_host_ports="7880, 7882/udp").agent_host_ports == ["7880/tcp", "7882/udp"]
    assert Settings().agent_host_filter is True and Settings().agent_egress == "internet"
    with pytest.raises(ValueError, match="tcp or udp"):
        Settings(agent_host_ports="7880/icmp")
    with pytest.raises(ValueError):
        Settings(agent_egress="anywhere")


@pytest.mark.parametrize("url, port", [
    ("ws://127.0.0.1:7880", 7880), ("wss://x.livekit.cloud", 443), ("ws://lk", 80), ("http://h:1/x", 1), ("ws://h:x", None),
])
def test_port_of_url(url: str, port: int | None) -> None:
    assert port_of_url(url) == port


def test_host_port_allows() -> None:
    ports = [parse_host_port(p) for p in ("7880/tcp", "50000-60000/udp")]
    assert host_port_allows(ports, port=7880) and host_port_allows(ports, port=55000, proto="udp")
    assert not host_port_allows(ports, port=7880, proto="udp") and not host_port_allows(ports, port=7881)


def test_gateway_is_first_host() -> None:
    assert gateway_of("172.29.3.0/24") == "172.29.3.1"


LIVEKIT_PORTS = [parse_host_port(p) for p in ["7880/tcp", "7881/tcp", "7882/udp", "50000-60000/udp"]]


@pytest.mark.parametrize("endpoint, filtered, on_host, egress, ports, says", [
    # On this host: the filter's INPUT chain decides by port.
    ("http://172.29.3.1:4318", True, True, "internet", LIVEKIT_PORTS, "add 4318/tcp to ORCH_AGENT_HOST_PORTS"),
    ("http://172.29.3.1:4318", True, True, "internet", [*LIVEKIT_PORTS, parse_host_port("4318")], None),
    ("http://collector.internal:4318", True, True, "livekit-only", [parse_host_port("4000-4400/tcp")], None),
    ("http://172.29.3.1:4318", True, True, "internet", [parse_host_port("4318/udp")], "add 4318/tcp"),  # tcp, not udp
    ("http://172.29.3.1", True, True, "internet", LIVEKIT_PORTS, "add 80/tcp"),  # the scheme's port
    ("https://172.29.3.1", True, True, "internet", [parse_host_port("443")], None),
    # Elsewhere: only egress livekit-only stops it (everything agents send past the host is dropped).
    ("http://otel.example.com:4318", True, False, "internet", LIVEKIT_PORTS, None),
    ("http://otel.example.com:4318", True, False, "livekit-only", LIVEKIT_PORTS, "set ORCH_AGENT_EGRESS=internet"),
    # Loopback is each agent's own, whatever the ports say.
    ("http://127.0.0.1:4318", True, True, "internet", [parse_host_port("4318")], "name the agents' gateway (172.29.3.1)"),
    ("http://localhost:4318", True, True, "internet", LIVEKIT_PORTS, "loopback"),
    # No filter (switched off, the host network, an engine without one): nothing to say.
    ("http://172.29.3.1:4318", False, True, "internet", LIVEKIT_PORTS, None),
    ("http://127.0.0.1:4318", False, True, "livekit-only", [], None),
])
def test_otlp_endpoint_the_host_filter_would_block(endpoint: str, filtered: bool, on_host: bool, egress: str,
                                                     ports: list, says: str | None) -> None:
    why = otlp_blocked(endpoint, filtered=filtered, ports=ports, egress=egress, on_host=on_host, gateway=NET.gateway)
    if says is None:
        assert why is None
    else:
        assert why is not None and says in why and f"ORCH_AGENT_OTLP_ENDPOINT={endpoint}" in why, why


@pytest.mark.parametrize("url,network,override,want", [
    ("ws://127.0.0.1:7880", NET, None, "ws://172.29.3.1:7880"),
    ("ws://localhost:7880/path", NET, None, "ws://172.29.3.1:7880/path"),
    ("wss://acme.livekit.cloud", NET, None, "wss://acme.livekit.cloud"),
    ("ws://10.0.0.5:7880", NET, None, "ws://10.0.0.5:7880"),
    ("ws://127.0.0.1:7880", AgentNetwork(name="host"), None, "ws://127.0.0.1:7880"),
    ("ws://127.0.0.1:7880", NET, "ws://livekit.internal:7880", "ws://livekit.internal:7880"),
    ("ws://[::1]:7880", NET, None, "ws://172.29.3.1:7880"),
])
def test_agent_livekit_url(url: str, network: AgentNetwork, override: str | None, want: str) -> None:
    assert agent_livekit_url(url, network=network, override=override) == want


@pytest.mark.parametrize("ref,want", [
    ("agent-orchestrator/agent:latest", ("agent-orchestrator/agent", None)),
    ("registry:5000/team/agent", ("registry:5000/team/agent", None)),
    ("registry:5000/team/agent:1.2", ("registry:5000/team/agent", None)),
    ("agent@sha256:ab", ("agent", "sha256:ab")),
    ("agent:1@sha256:ab", ("agent", "sha256:ab")),
])
def test_split_image(ref: str, want: tuple[str, str | None]) -> None:
    assert split_image(ref) == want


@pytest.mark.parametrize("image,allowlist,want", [
    ("agent-orchestrator/agent:latest", ["agent-orchestrator/agent"], True),
    ("agent-orchestrator/agent:v2", ["agent-orchestrator/agent"], True),
    ("agent-orchestrator/agent", ["agent-orchestrator/agent:latest"], True),  # a tag in an entry is ignored
    ("agent-orchestrator/agent-evil:latest", ["agent-orchestrator/agent"], False),
    ("evil/agent-orchestrator/agent", ["agent-orchestrator/agent"], False),
    ("busybox", ["agent-orchestrator/agent"], False),
    ("team/agent@sha256:aa", ["team/agent@sha256:aa"], True),
    ("team/agent@sha256:bb", ["team/agent@sha256:aa"], False),
    ("team/agent:latest", ["team/agent@sha256:aa"], False),  # a pinned entry needs the pinned reference
    ("any/repo@sha256:aa", ["sha256:aa"], True),
    ("any/repo:latest", ["sha256:aa"], False),
    ("x", [], False),
])
def test_image_allowed(image: str, allowlist: list[str], want: bool) -> None:
    assert image_allowed(image, allowlist=allowlist) is want


@pytest.mark.parametrize("user,root", [("0", True), ("root", True), ("0:0", True), ("root:wheel", True),
                                       ("10001:10001", False), ("agent", False), ("1000", False)])
def test_is_root_user(user: str, root: bool) -> None:
    assert is_root_user(user) is root


@pytest.mark.parametrize("bind,network,reachable", [
    ("127.0.0.1", "", False),
    ("localhost", "", False),
    ("::1", "", False),
    ("0.0.0.0", "", True),
    ("172.29.0.1", "", True),  # the gateway
    ("192.0.2.2", "", True),  # any host address is routed to from the network
    ("127.0.0.1", "host", True),  # on the host network the host's loopback is the agents' loopback
    ("127.0.0.1", "my-net", False),
])
def test_api_reachable_by_agents(bind: str, network: str, reachable: bool) -> None:
    assert api_reachable_by_agents(bind, agent_network=network) is reachable


def test_settings_allowlist_defaults_to_the_default_image_repository() -> None:
    s = Settings(agent_image="agent-orchestrator/agent:latest", agent_image_allowlist=[])
    assert s.image_allowlist == ["agent-orchestrator/agent"]
    assert Settings(agent_image_allowlist="a/b, c/d@sha256:ee").image_allowlist == ["a/b", "c/d@sha256:ee"]  # type: ignore[arg-type]


@pytest.mark.parametrize("user", ["0", "root", "0:0"])
def test_settings_refuse_a_root_agent_user(user: str) -> None:
    with pytest.raises(ValueError, match="ORCH_AGENT_USER must be a non-root user"):
        Settings(agent_user=user)


def test_settings_refuse_a_bad_subnet() -> None:
    with pytest.raises(ValueError, match="not a subnet"):
        Settings(agent_subnet_pool=["172.29.0.0/33"])


async def test_an_engine_that_makes_no_networks_keeps_the_host_network_unless_one_is_named() -> None:
    from orchestrator.services.agent_networks import AgentNetworks

    nets = AgentNetworks(settings=Settings(agent_network=""), provider=object())
    assert nets.shares_host_network and (await nets.for_client("c1")).name == "host"
    named = AgentNetworks(settings=Settings(agent_network="overlay-agents"), provider=object())
    assert not named.shares_host_network and (await named.for_client("c1")).name == "overlay-agents"


class _MustNotMake:
    async def ensure_network(self, name: str, **_: object) -> object:
        raise AssertionError(f"asked to make {name}")


@pytest.mark.parametrize("mode", ["none", "container:sidecar"])
async def test_docker_network_modes_are_used_as_they_are(mode: str) -> None:
    from orchestrator.services.agent_networks import AgentNetworks

    nets = AgentNetworks(settings=Settings(agent_network=mode), provider=_MustNotMake())
    assert (await nets.ensure_default()) == AgentNetwork(name=mode)


def test_docker_and_swarm_runtimes_make_agent_networks() -> None:
    """Docker makes a bridge, Swarm an overlay per scope (a node's bridge cannot carry services): agents of neither
    engine share a host's network unless the operator says `host`."""
    from orchestrator.runtime import NetworkProvider
    from orchestrator.runtime.docker.runtime import DockerRuntime
    from orchestrator.runtime.swarm.runtime import SwarmRuntime

    assert isinstance(DockerRuntime(), NetworkProvider)
    assert isinstance(SwarmRuntime(base_url="tcp://127.0.0.1:1"), NetworkProvider)


@pytest.mark.parametrize("host, ours", [
    ("127.0.0.1", True), ("localhost", True),  # addresses this machine has
    ("192.0.2.1", False),  # TEST-NET-1: never an address of this machine
    ("no-such-host.invalid", False),  # does not resolve: not ours to judge
])
def test_an_endpoint_host_is_this_machines_when_it_can_be_bound(host: str, ours: bool) -> None:
    from orchestrator.services.agent_networks import _this_host

    assert _this_host(host) is ours
