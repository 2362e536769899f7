"""Tenant isolation rules (pure): agent network names and subnets, the URL agents use, the host ports agents may
reach, image allowlist.

No I/O here and no engine: the runtime creates the network and installs the host filter, the services apply these rules.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

HOST_NETWORK = "host"  # the explicit operator opt-out: agents share the host's network namespace
NETWORK_PREFIX = "orch-agents"
# The label that marks a network as an agents' network the orchestrator made (naming.LABEL_PREFIX + "network"):
# only such a network gets the host filter (an operator's own network is left as the operator set it up).
AGENTS_NETWORK_LABEL = "agent-orchestrator.network"


class AgentNetwork(BaseModel):
    """The network agents of one deployment (or one client) run on; gateway = the host as agents see it."""

    model_config = ConfigDict(frozen=True, extra="forbid")  # models.Frozen's; this module sits below models (settings use it)

    name: str
    subnet: str | None = None
    gateway: str | None = None  # None on the host network (agents then see the host's loopback as theirs)
    bridge: str | None = None  # the host interface of the network: where the host filter's rules match
    managed: bool = False  # made by the orchestrator (labelled as agents' network): the host filter applies

    @property
    def is_host(self) -> bool:
        return self.name == HOST_NETWORK


def engine_network(name: str) -> bool:
    """Docker's own modes (`none`, `container:<name>`): nothing to make or inspect, used as they are."""
    return name == "none" or name.startswith("container:")


def network_name(*, configured: str, scope: str, client_id: str | None) -> str:
    """The Docker network of an agent: `<configured or orch-agents-<scope>>[-c<client hash>]` ("host" as is).

    Per-client names carry a hash of the exact client id: ids may hold characters a name may not,
    and two ids must never share a network.
    """
    if configured == HOST_NETWORK:
        return configured
    base = configured or f"{NETWORK_PREFIX}-{scope}"
    if client_id is None:
        return base
    return f"{base}-c{hashlib.sha256(client_id.encode()).hexdigest()[:12]}"


class HostPort(BaseModel):
    """A port (or range) on the agents' gateway that agents may reach: LiveKit's signal, TCP and UDP ports."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    proto: str  # "tcp" | "udp"
    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.first}{'' if self.first == self.last else f'-{self.last}'}/{self.proto}"


# LiveKit's own defaults: signal 7880/tcp, ICE over TCP 7881, one UDP port 7882 or the 50000-60000 range.
DEFAULT_HOST_PORTS = ["7880/tcp", "7881/tcp", "7882/udp", "50000-60000/udp"]
EGRESS_MODES = ("internet", "livekit-only")


def parse_host_port(spec: str) -> HostPort:
    """`7880`, `7880/tcp`, `50000-60000/udp` → HostPort (a bare port means tcp); ValueError names what is wrong."""
    text = spec.strip().lower()
    ports, slash, proto = text.partition("/")
    proto = proto if slash else "tcp"
    if proto not in ("tcp", "udp"):
        raise ValueError(f"{spec!r}: the protocol must be tcp or udp")
    first_text, _, last_text = ports.partition("-")
    try:
        first, last = int(first_text), int(last_text or first_text)
    except ValueError:
        raise ValueError(f"{spec!r}: not a port or a range (e.g. 7880/tcp, 50000-60000/udp)") from None
    if not (1 <= first <= last <= 65535):
        raise ValueError(f"{spec!r}: ports run from 1 to 65535, the first ≤ the last")
    return HostPort(proto=proto, first=first, last=last)


def port_of_url(url: str) -> int | None:
    """The TCP port a ws(s)/http(s) URL connects to (the scheme's default when none is written)."""
    parts = urlsplit(url)
    try:
        explicit = parts.port
    except ValueError:
        return None
    return explicit or {"ws": 80, "http": 80, "wss": 443, "https": 443}.get(parts.scheme)


def host_port_allows(ports: Iterable[HostPort], *, port: int, proto: str = "tcp") -> bool:
    return any(p.proto == proto and p.first <= port <= p.last for p in ports)


def otlp_blocked(endpoint: str, *, filtered: bool, ports: Iterable[HostPort], egress: str, on_host: bool,
                 gateway: str | None = None) -> str | None:
    """Why agents' spans sent to `endpoint` (ORCH_AGENT_OTLP_ENDPOINT) would never arrive on a network with the
    host filter, naming the setting to change; None when they get through (or there is no filter).

    `on_host`: the endpoint's address is one of this host's. The filter (runtime/docker/firewall.py) drops what agents
    send to any address of the host except ORCH_AGENT_HOST_PORTS, and with ORCH_AGENT_EGRESS=livekit-only everything
    they send past it; an agent's loopback is its own.
    """
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "", port_of_url(endpoint)
    if not filtered or port is None:
        return None
    at = f"ORCH_AGENT_OTLP_ENDPOINT={endpoint}"
    if _is_loopback_host(host):
        where = f"the agents' gateway ({gateway})" if gateway else "an address of the host agents reach (their network's gateway)"
        return (f"{at} is a loopback address, which is each agent's own: agent spans will be lost; name {where} "
                f"and add {port}/tcp to ORCH_AGENT_HOST_PORTS")
    if on_host and not host_port_allows(ports, port=port):
        return (f"{at} is on this host, and the agents' host filter drops port {port}/tcp: agent spans will be lost; "
                f"add {port}/tcp to ORCH_AGENT_HOST_PORTS")
    if not on_host and egress == "livekit-only":
        return (f"{at} is not on this host, and ORCH_AGENT_EGRESS=livekit-only drops everything agents send past it: "
                "agent spans will be lost; set ORCH_AGENT_EGRESS=internet, or run the collector on the agents' gateway "
                "with its port in ORCH_AGENT_HOST_PORTS")
    return None


def pick_subnet(*, pool: Iterable[str], prefix: int, taken: Iterable[str]) -> str | None:
    """The first /prefix subnet of the pool that overlaps none of `taken` (other networks' subnets), or None."""
    used = [ipaddress.ip_network(t, strict=False) for t in taken]
    for block in pool:
        net = ipaddress.ip_network(block, strict=False)
        if prefix < net.prefixlen:
            candidates: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = [net]
        else:
            candidates = net.subnets(new_prefix=prefix)
        for candidate in candidates:
            if not any(candidate.version == u.version and candidate.overlaps(u) for u in used):
                return str(candidate)
    return None


def gateway_of(subnet: str) -> str:
    """Docker's choice for a bridge's gateway: the subnet's first host address."""
    return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def agent_livekit_url(url: str, *, network: AgentNetwork, override: str | None = None) -> str:
    """The LiveKit URL handed to an agent: the override if set, else the tenant's URL with a loopback
    host replaced by the network's gateway (a container's loopback is its own, not the host's)."""
    if override:
        return override
    parts = urlsplit(url)
    host = parts.hostname or ""
    if network.gateway is None or not _is_loopback_host(host):
        return url
    netloc = network.gateway + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def split_image(ref: str) -> tuple[str, str | None]:
    """`repo[:tag][@sha256:…]` → (repository, digest or None); a registry port is not a tag."""
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref = ref[:colon]
    return ref, digest


def image_allowed(image: str, *, allowlist: Iterable[str]) -> bool:
    """An allowlist entry is a repository (any tag or digest of it), `repo@sha256:…` or a bare
    `sha256:…` digest (only references pinned to exactly that digest)."""
    repo, digest = split_image(image)
    for entry in allowlist:
        entry = entry.strip()
        if not entry:
            continue
        if entry.startswith("sha256:"):
            if digest == entry:
                return True
            continue
        allowed_repo, allowed_digest = split_image(entry)
        if allowed_repo == repo and (allowed_digest is None or allowed_digest == digest):
            return True
    return False


def is_root_user(user: str) -> bool:
    """`0`, `root`, `0:0`, `root:…`: a user spec that runs as uid 0."""
    name = user.split(":", 1)[0].strip()
    return name in ("0", "root", "")


def api_reachable_by_agents(bind: str, *, agent_network: str) -> bool:
    """Whether agents can reach an API bound to `bind`: on the host network everything the host
    listens on is theirs too; on their own network only loopback is out of reach (a container's
    127.0.0.1 is its own), while the gateway — and through it every other host address — is not."""
    if agent_network == HOST_NETWORK:
        return True
    return not _is_loopback_host(bind.strip("[]"))
