"""Pure rules of the host filter on an agents' bridge: the product's own iptables chains, as text.

Docker filters what agents send *through* the host (FORWARD, where DOCKER-USER sits) but not what they send *to* it:
traffic to the gateway, or to any other address of the host, is the host's INPUT chain, so every service bound to
0.0.0.0 answers agents. The filter is one chain per agents' bridge, jumped to from INPUT for that interface only:

    ORCH-AGENTS-<bridge>:  ACCEPT established/related · ACCEPT each LiveKit port · DROP the rest

and, with egress `livekit-only`, one more jumped to from DOCKER-USER for that interface: RETURN established, DROP.
LiveKit's ports are let through to every address of the host, not only the gateway: agents signal to the gateway,
but LiveKit announces one node IP for media (the host's public address, or the gateway of the first deployment that
shares it), and that is an address of the host too. Nothing else of the host's rules is read for more than "is our
jump there", and nothing else is written.
Rules are written exactly as `iptables -S` prints them, so "installed as wanted" is a comparison of lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from orchestrator.rules.isolation import HostPort

INPUT_PREFIX = "ORCH-AGENTS-"
EGRESS_PREFIX = "ORCH-EGRESS-"
CHAIN_MAX = 28  # iptables' limit on a chain name (bridge names are ≤ 15, so ours are ≤ 27)


class Filter(NamedTuple):
    """What the host filter of one bridge should be: chains with their rules, and the jumps into them."""

    chains: dict[str, list[str]]  # chain → its rules, in `iptables -S` form
    jumps: list[tuple[str, str]]  # (built-in or Docker chain, rule spec after "-A <chain> ")


def input_chain(bridge: str) -> str:
    return INPUT_PREFIX + bridge


def egress_chain(bridge: str) -> str:
    return EGRESS_PREFIX + bridge


def wanted(*, bridge: str, ports: Sequence[HostPort], egress: str) -> Filter:
    """The filter for one agents' bridge (egress: internet | livekit-only)."""
    chain = input_chain(bridge)
    rules = [f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    for p in ports:
        span = str(p.first) if p.first == p.last else f"{p.first}:{p.last}"
        rules.append(f"-A {chain} -p {p.proto} -m {p.proto} --dport {span} -j ACCEPT")
    rules.append(f"-A {chain} -j DROP")
    chains = {chain: rules}
    jumps = [("INPUT", f"-i {bridge} -j {chain}")]
    if egress == "livekit-only":
        out = egress_chain(bridge)
        chains[out] = [f"-A {out} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN", f"-A {out} -j DROP"]
        jumps.append(("DOCKER-USER", f"-i {bridge} -j {out}"))
    return Filter(chains=chains, jumps=jumps)


def current(listing: Iterable[str], *, bridge: str) -> Filter:
    """Our part of an `iptables -S` listing (filter table): our chains' rules and the jumps into them."""
    ours = (input_chain(bridge), egress_chain(bridge))
    chains: dict[str, list[str]] = {}
    jumps: list[tuple[str, str]] = []
    for line in listing:
        parts = line.split()
        if len(parts) < 2:
            continue
        if parts[0] == "-N" and parts[1] in ours:
            chains.setdefault(parts[1], [])
        elif parts[0] == "-A" and parts[1] in ours:
            chains.setdefault(parts[1], []).append(line.strip())
        elif parts[0] == "-A" and parts[-2:-1] == ["-j"] and parts[-1] in ours:
            jumps.append((parts[1], " ".join(parts[2:])))
    return Filter(chains=chains, jumps=jumps)


def restore_script(have: Filter, want: Filter) -> str | None:
    """One `iptables-restore --noflush` script that turns `have` into `want` atomically; None when they match.

    Declaring a chain in a --noflush script creates or empties that chain (only that one); our jumps are
    inserted first in their chain, so a host rule further down (an ACCEPT) cannot let agents past the filter.
    """
    if have.chains == want.chains and sorted(have.jumps) == sorted(want.jumps):
        return None
    lines = ["*filter"]
    lines += [f":{chain} - [0:0]" for chain in want.chains]
    for rules in want.chains.values():
        lines += rules
    for jump in dict.fromkeys(have.jumps + want.jumps):  # each distinct jump once, in order
        count, keep = have.jumps.count(jump), 1 if jump in want.jumps else 0
        lines += [f"-D {jump[0]} {jump[1]}"] * max(count - keep, 0)  # strays and duplicates go
        if keep and not count:
            lines.append(f"-I {jump[0]} 1 {jump[1]}")
    for chain in have.chains:
        if chain not in want.chains:
            lines += [f":{chain} - [0:0]", f"-X {chain}"]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def removal_script(have: Filter) -> str | None:
    """The script that removes our jumps and chains (and nothing else); None when nothing of ours is there."""
    if not have.chains and not have.jumps:
        return None
    lines = ["*filter"] + [f"-D {parent} {spec}" for parent, spec in have.jumps]
    for chain in have.chains:
        lines += [f":{chain} - [0:0]", f"-X {chain}"]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def describe(want: Filter) -> str:
    """One line for logs and `orchestrator network`: the chains and what they let through."""
    return "; ".join(f"{chain}: {' | '.join(r.split(' ', 2)[2] for r in rules)}" for chain, rules in want.chains.items())
