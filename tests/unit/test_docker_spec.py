"""Docker's pure rules, as tables: the spec → the Engine API's arguments, rows → ContainerInfo, network attributes
→ AgentNetwork, and the host filter's iptables text (what is wanted, what is there, the one script between)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from orchestrator.core.models import ContainerStatus, Health
from orchestrator.rules.isolation import parse_host_port
from orchestrator.runtime import ContainerSpec
from orchestrator.runtime.docker import firewall
from orchestrator.runtime.docker.spec import (
    bridge_name, bridge_options, create_kwargs, host_config_kwargs, info_from_inspect, info_from_list, network_info,
)

SPEC = ContainerSpec(
    name="agent_c_s_r", image="img:1", labels={"a": "b"}, env={"K": "v"}, memory="256m", cpus=0.5, pids=128,
    network="orch-agents-x", restart_policy="on-failure", restart_max=3, stop_timeout_s=5, user="10001:10001",
)


def test_the_hardened_profile_maps_onto_the_host_config() -> None:
    hc = host_config_kwargs(SPEC)
    assert hc["cap_drop"] == ["ALL"] and hc["cap_add"] is None and hc["security_opt"] == ["no-new-privileges:true"]
    assert hc["read_only"] is True and hc["tmpfs"] == {"/tmp": "size=64m"} and hc["init"] is True
    assert (hc["mem_limit"], hc["nano_cpus"], hc["pids_limit"]) == ("256m", 500_000_000, 128)
    assert hc["restart_policy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert hc["network_mode"] == "orch-agents-x" and hc["runtime"] is None
    assert hc["log_config"] == {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}


@pytest.mark.parametrize("changes, key, want", [
    ({"restart_policy": "always"}, "restart_policy", {"Name": "always"}),
    ({"cap_add": ("NET_BIND_SERVICE",)}, "cap_add", ["NET_BIND_SERVICE"]),
    ({"no_new_privileges": False}, "security_opt", None),
    ({"tmpfs": {}}, "tmpfs", None),
    ({"runtime": "runsc"}, "runtime", "runsc"),
    ({"read_only_root": False}, "read_only", False),
])
def test_operator_loosening_maps_one_knob_each(changes: dict[str, object], key: str, want: object) -> None:
    assert host_config_kwargs(SPEC.model_copy(update=changes))[key] == want


def test_create_kwargs() -> None:
    assert create_kwargs(SPEC) == {"image": "img:1", "name": "agent_c_s_r", "labels": {"a": "b"}, "environment": {"K": "v"},
                                   "user": "10001:10001", "stop_timeout": 5, "detach": True, "stdin_open": False}
    assert create_kwargs(SPEC.model_copy(update={"stdin": True}))["stdin_open"] is True  # a pool member waits on stdin
    assert create_kwargs(SPEC.model_copy(update={"user": None}))["user"] == ""


@pytest.mark.parametrize("status, state, health, exit_code", [
    ("Up 3 seconds (healthy)", "running", Health.healthy, None),
    ("Up 1 second (health: starting)", "running", Health.starting, None),
    ("Up 2 minutes (unhealthy)", "running", Health.unhealthy, None),
    ("Exited (3) 2 seconds ago", "exited", Health.none, 3),
    ("Restarting (3) 1 second ago", "restarting", Health.none, None),
    ("Created", "created", Health.none, None),
])
def test_list_rows(status: str, state: str, health: Health, exit_code: int | None) -> None:
    info = info_from_list({"Id": "abc", "Names": ["/n"], "State": state, "Status": status, "Labels": None, "Created": 0})
    assert (info.name, info.status, info.health, info.exit_code, info.labels) == ("n", ContainerStatus(state), health, exit_code, {})
    assert isinstance(info.created_at, datetime)


@pytest.mark.parametrize("state, want_exit, health", [
    ({"Status": "exited", "ExitCode": 3}, 3, Health.none),
    ({"Status": "running", "ExitCode": 0, "Health": {"Status": "healthy"}}, None, Health.healthy),
    ({"Status": "running", "Health": {"Status": "weird"}}, None, Health.none),
])
def test_inspect_answers(state: dict[str, object], want_exit: int | None, health: Health) -> None:
    info = info_from_inspect({"Id": "i", "Name": "/n", "State": state, "Config": {"Labels": {"x": "y"}},
                              "Created": "2026-12-02T01:02:03.123456789Z"})
    assert (info.exit_code, info.health, info.labels) == (want_exit, health, {"x": "y"})
    assert info.created_at == datetime(2026, 12, 2, 1, 2, 3, 123456, tzinfo=timezone.utc)  # `Z`: comparable to now


@pytest.mark.parametrize("attrs, want", [
    ({"Name": "n", "Id": "0123456789abcdef", "IPAM": {"Config": [{"Subnet": "172.29.4.0/24", "Gateway": "172.29.4.1"}]},
      "Options": {"com.docker.network.bridge.name": "oa-x"}, "Labels": {"agent-orchestrator.network": "agents"}, "Driver": "bridge"},
     ("172.29.4.1", "oa-x", True)),
    ({"Name": "n", "Id": "0123456789abcdef", "IPAM": {"Config": [{"Subnet": "10.9.0.0/16"}]}, "Labels": {}},
     ("10.9.0.1", "br-0123456789ab", False)),
    ({"Name": "n", "Id": "0123456789abcdef", "IPAM": {"Config": [{"Subnet": "10.9.0.0/16"}]}, "Driver": "overlay",
      "Labels": {"agent-orchestrator.network": "agents"}}, ("10.9.0.1", "br-0123456789ab", False)),
])
def test_network_attributes(attrs: dict[str, object], want: tuple[str, str, bool]) -> None:
    net = network_info(attrs)
    assert (net.gateway, net.bridge, net.managed) == want


def test_bridge_names_fit_linux_and_differ() -> None:
    a, b = bridge_name("orch-agents-acme"), bridge_name("orch-agents-acme-c0123456789ab")
    assert a != b and len(a) <= 15 and len(b) <= 15 and a.startswith("oa-")
    assert bridge_options("orch-agents-acme") == {"com.docker.network.bridge.enable_icc": "false",
                                                  "com.docker.network.bridge.name": a}
    assert len(firewall.input_chain(a)) <= firewall.CHAIN_MAX and len(firewall.egress_chain(a)) <= firewall.CHAIN_MAX


PORTS = [parse_host_port(p) for p in ("7880/tcp", "50000-60000/udp")]
WANT = firewall.wanted(bridge="oa-1", ports=PORTS, egress="internet")


def test_the_filter_lets_agents_reach_the_livekit_ports_and_nothing_else() -> None:
    assert WANT.chains == {"ORCH-AGENTS-oa-1": [
        "-A ORCH-AGENTS-oa-1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A ORCH-AGENTS-oa-1 -p tcp -m tcp --dport 7880 -j ACCEPT",
        "-A ORCH-AGENTS-oa-1 -p udp -m udp --dport 50000:60000 -j ACCEPT",
        "-A ORCH-AGENTS-oa-1 -j DROP",
    ]}
    assert WANT.jumps == [("INPUT", "-i oa-1 -j ORCH-AGENTS-oa-1")]
    strict = firewall.wanted(bridge="oa-1", ports=PORTS, egress="livekit-only")
    assert strict.chains["ORCH-EGRESS-oa-1"][-1] == "-A ORCH-EGRESS-oa-1 -j DROP"
    assert ("DOCKER-USER", "-i oa-1 -j ORCH-EGRESS-oa-1") in strict.jumps


HOST = ["-P INPUT ACCEPT", "-N DOCKER-USER", "-N ORCH-AGENTS-oa-2", "-A INPUT -i eth0 -j ACCEPT",
        "-A INPUT -i oa-2 -j ORCH-AGENTS-oa-2", "-A DOCKER-USER -j RETURN", "-A ORCH-AGENTS-oa-2 -j DROP"]


def test_what_is_there_is_read_for_one_bridge_only() -> None:
    assert firewall.current(HOST, bridge="oa-1") == firewall.Filter(chains={}, jumps=[])
    assert firewall.current(HOST, bridge="oa-2") == firewall.Filter(
        chains={"ORCH-AGENTS-oa-2": ["-A ORCH-AGENTS-oa-2 -j DROP"]}, jumps=[("INPUT", "-i oa-2 -j ORCH-AGENTS-oa-2")])


def _listing(f: firewall.Filter) -> list[str]:
    return ([f"-N {c}" for c in f.chains] + [f"-A {p} {s}" for p, s in f.jumps]
            + [r for rules in f.chains.values() for r in rules])


def test_installed_as_wanted_means_no_script() -> None:
    assert firewall.restore_script(firewall.current(HOST + _listing(WANT), bridge="oa-1"), WANT) is None


def test_a_fresh_host_gets_chain_rules_and_one_jump_first_in_input() -> None:
    script = firewall.restore_script(firewall.current(HOST, bridge="oa-1"), WANT)
    assert script is not None and script.startswith("*filter\n:ORCH-AGENTS-oa-1 - [0:0]\n") and script.endswith("COMMIT\n")
    assert "-I INPUT 1 -i oa-1 -j ORCH-AGENTS-oa-1" in script
    assert "oa-2" not in script and "eth0" not in script  # nothing else of the host is written


def test_changed_ports_duplicate_jumps_and_a_dropped_egress_chain_are_repaired() -> None:
    strict = firewall.wanted(bridge="oa-1", ports=PORTS, egress="livekit-only")
    doubled = _listing(strict) + ["-A INPUT -i oa-1 -j ORCH-AGENTS-oa-1"]
    script = firewall.restore_script(firewall.current(doubled, bridge="oa-1"), WANT) or ""
    assert script.count("-D INPUT -i oa-1 -j ORCH-AGENTS-oa-1") == 1 and "-I INPUT" not in script
    assert "-D DOCKER-USER -i oa-1 -j ORCH-EGRESS-oa-1" in script and script.index("-D DOCKER-USER") < script.index("-X ORCH-EGRESS-oa-1")


def test_removal_takes_our_jumps_and_chains_and_nothing_else() -> None:
    assert firewall.removal_script(firewall.current(HOST, bridge="oa-1")) is None
    script = firewall.removal_script(firewall.current(HOST, bridge="oa-2")) or ""
    assert script.splitlines() == ["*filter", "-D INPUT -i oa-2 -j ORCH-AGENTS-oa-2", ":ORCH-AGENTS-oa-2 - [0:0]",
                                   "-X ORCH-AGENTS-oa-2", "COMMIT"]


@pytest.mark.parametrize("status, state, reason", [
    ("Restarting (3) 1 second ago", "restarting", "exit 3, restarting: could not join LiveKit"),
    ("Exited (3) 2 seconds ago", "exited", "exit 3: could not join LiveKit"),
    ("Exited (0) 2 seconds ago", "exited", None),
    ("Exited (42) 1 second ago", "exited", "exit 42: exited with code 42"),
    ("Up 3 seconds", "running", None),
])
def test_an_agent_that_exits_says_why(status: str, state: str, reason: str | None) -> None:
    info = info_from_list({"Id": "abc", "Names": ["/n"], "State": state, "Status": status, "Created": 0})
    assert (info.reason or "").startswith(reason or "") and (info.reason is None) == (reason is None)


def test_a_restarted_agent_keeps_the_reason_of_its_last_failure() -> None:
    from orchestrator.rules.agent_exits import failing
    from orchestrator.runtime.docker.spec import last_exit, with_last_exit

    restarting = info_from_inspect({"Id": "i", "Name": "/n", "State": {"Status": "restarting", "ExitCode": 3}})
    assert last_exit(restarting) == 3 and failing(restarting.reason)
    running = info_from_inspect({"Id": "i", "Name": "/n", "State": {"Status": "running", "ExitCode": 0}})
    assert running.reason is None  # Docker reset the exit code on restart ...
    again = with_last_exit(running, 3)  # ... the runtime remembers it
    assert again.reason is not None and again.reason.startswith("exit 3, restarted: could not join LiveKit")
    assert with_last_exit(running, None) == running and not failing("no suitable node")
