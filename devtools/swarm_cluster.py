"""A real Docker Swarm of N nodes on this one machine, made for a test run and torn down after it.

Each node is a network namespace of its own (`sw-<run>-nK`) with a veth on a private bridge that sits in
one more namespace (`sw-<run>-hub`), a hostname of its own (`unshare --uts`) and a dockerd of its own
(socket, data root, exec root, pidfile, config file; its docker0 lives in the node's namespace and it
keeps its iptables rules in that namespace, so the host's engine, its docker0 and its iptables are never touched).
The nodes form a swarm of managers; images are copied from the main engine with `docker save | load`
(nothing is pulled). A livekit-server runs inside the hub namespace, on the bridge every node reaches.

The test process itself lives in the host's namespace and must reach that LiveKit (the orchestrator
calls its API, test participants join rooms), so one more veth end is placed in the host namespace
with an address on the run's private /24: a connected route to that subnet and nothing else (no
iptables, no forwarding). It vanishes with the hub namespace.

Teardown, also after a failure (and for runs whose owner process died, at the next start):
services and containers first, then every dockerd by its pidfile, then any process still naming a
node's exec root, then mounts under its roots, then the namespaces; finally it checks that nothing is
left. Only the run's namespace addresses and unix sockets are ever contacted.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests
import yaml

from devtools.livekit_server import LiveKitServer, ServerProcess, free_port, livekit_binary, wait_ready
from devtools.swarm_node import PREFIX, Node, sh
from devtools.swarm_teardown import destroy_run, sweep_stale

__all__ = ["HubLiveKit", "Node", "SwarmCluster", "sweep_stale"]
LIVEKIT_PORT, LIVEKIT_TCP, LIVEKIT_UDP = 7880, 7881, 7882
# What a node's engine answers while raft re-elects or the machine is loaded (a 5 s read timeout seen in CI): ask again.
UNSETTLED = (docker.errors.DockerException, requests.exceptions.RequestException)


@dataclass
class HubLiveKit(ServerProcess):
    """A livekit-server inside the hub namespace, bound to the bridge address every node routes to.

    Quacks like devtools.livekit_server.LiveKitServer (url, http_url, api_key, api_secret, log_tail).
    """

    host: str
    netns: str
    api_key: str
    api_secret: str
    port: int = LIVEKIT_PORT
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    webhook_urls: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, timeout_s: float = 20) -> "HubLiveKit":
        workdir = Path(tempfile.mkdtemp(prefix=f"{self.netns}-lk-"))
        cfg = {
            "port": self.port,
            "bind_addresses": [self.host],
            "rtc": {"tcp_port": LIVEKIT_TCP, "udp_port": LIVEKIT_UDP, "use_external_ip": False, "node_ip": self.host},
            "keys": {self.api_key: self.api_secret},
            "room": {"empty_timeout": 300, "departure_timeout": 20},
            "logging": {"level": "info"},
        }
        (workdir / "livekit.yaml").write_text(yaml.safe_dump(cfg))
        self.log_path = workdir / "livekit.log"
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", livekit_binary(), "--config", str(workdir / "livekit.yaml")],
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        return wait_ready(self.proc, self.http_url, self.log_tail, timeout_s=timeout_s, what=f"livekit-server in {self.netns}", ready=self)



IMAGE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-orchestrator" / "swarm-images"


def _saved_image(source: docker.DockerClient, tag: str) -> Path:
    """The `docker save` of `tag`, kept per image id (saving the agent image takes ~8 s here)."""
    image = source.images.get(tag)
    stem = re.sub(r"[^A-Za-z0-9]+", "-", tag)
    path = IMAGE_CACHE / f"{stem}-{image.id.split(':')[-1][:16]}.tar"
    if path.exists():
        return path
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    for old in IMAGE_CACHE.glob(f"{stem}-*.tar"):
        old.unlink(missing_ok=True)  # an older build of the same tag
    partial = path.with_suffix(f".{os.getpid()}.part")
    with partial.open("wb") as f:
        for chunk in image.save(named=True):
            f.write(chunk)
    partial.rename(path)
    return path


def _free_octet() -> int:
    """A third octet for 10.77.X.0/24 that no route of the host already uses."""
    routes = sh("ip", "-4", "route", "show", "table", "all").stdout
    taken = {int(m) for m in re.findall(r"10\.77\.(\d+)\.", routes)}
    free = [o for o in range(1, 250) if o not in taken]
    return secrets.choice(free)


class SwarmCluster:
    """`with SwarmCluster(nodes=3) as sw:` → a running swarm of managers, gone again on exit."""

    def __init__(self, *, nodes: int = 3, dispatcher_heartbeat_s: int = 2) -> None:
        sweep_stale()
        self.run = secrets.token_hex(2)
        self.octet = _free_octet()
        self.subnet = f"10.77.{self.octet}"
        self.hub = f"{PREFIX}{self.run}-hub"
        self.hub_ip = f"{self.subnet}.254"
        self.host_if = f"sw{self.run}r"  # the one interface in the host's namespace (≤15 chars)
        self.host_ip = f"{self.subnet}.200"
        self.nodes = [Node(self.run, k, f"{self.subnet}.{k}") for k in range(1, nodes + 1)]
        self.heartbeat_s = dispatcher_heartbeat_s
        self.livekit: HubLiveKit | LiveKitServer | None = None
        self.owner_file = Path(f"/run/{PREFIX}{self.run}.owner")

    # ---- bring-up --------------------------------------------------------------------------

    def __enter__(self) -> "SwarmCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def host_marks(self) -> list[str]:
        """Traces of this run in the host's own namespace beyond its one veth: iptables rules naming the run's
        subnet or interfaces, or a changed docker0. Empty when the host is untouched."""
        found = []
        for tool in ("iptables-save", "ip6tables-save"):
            if shutil.which(tool):
                rules = sh(tool, check=False).stdout
                found += [f"{tool}: {line}" for line in rules.splitlines() if f"{self.subnet}." in line or f"sw{self.run}" in line]
        if sh("ip", "-4", "-o", "addr", "show", "docker0", check=False).stdout != self._docker0:
            found.append("the host's docker0 changed")
        return found

    def start(self) -> "SwarmCluster":
        self.owner_file.write_text(json.dumps({"pid": os.getpid(), "nodes": len(self.nodes)}))
        self._docker0 = sh("ip", "-4", "-o", "addr", "show", "docker0", check=False).stdout
        try:
            self._network()
            errors: list[BaseException] = []
            threads = [threading.Thread(target=self._start_node, args=(n, errors)) for n in self.nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            self._form_swarm()
        except BaseException:
            self.destroy()
            raise
        return self

    @staticmethod
    def _start_node(node: Node, errors: list[BaseException]) -> None:
        try:
            node.start()
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            errors.append(exc)

    def _network(self) -> None:
        sh("ip", "netns", "add", self.hub)
        sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "addr", "add", f"{self.hub_ip}/24", "dev", "br0")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for node in self.nodes:
            sh("ip", "netns", "add", node.netns)
            sh("ip", "-n", node.netns, "link", "set", "lo", "up")
            # Made inside the hub namespace with its peer born in the node's: the host's namespace never sees them.
            sh("ip", "-n", self.hub, "link", "add", f"v{node.index}", "type", "veth", "peer", "name", "eth0", "netns", node.netns)
            sh("ip", "-n", self.hub, "link", "set", f"v{node.index}", "master", "br0", "up")
            sh("ip", "-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            sh("ip", "-n", node.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.hub, "link", "add", "vhost", "type", "veth", "peer", "name", self.host_if, "netns", str(os.getpid()))
        sh("ip", "-n", self.hub, "link", "set", "vhost", "master", "br0", "up")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")

    def _form_swarm(self) -> None:
        first = self.nodes[0]
        with closing(first.client()) as c:
            c.swarm.init(
                advertise_addr=first.address, listen_addr=f"{first.address}:2377",
                # A node is declared down after a few missed heartbeats: 2 s instead of 5 s keeps drills short.
                dispatcher_heartbeat_period=self.heartbeat_s * 1_000_000_000,
            )
            token = c.swarm.attrs["JoinTokens"]["Manager"]
        for node in self.nodes[1:]:
            with closing(node.client()) as c:
                c.swarm.join(remote_addrs=[f"{first.address}:2377"], join_token=token,
                             advertise_addr=node.address, listen_addr=f"{node.address}:2377")
        self.wait_ready(len(self.nodes))

    def wait_ready(self, count: int, *, timeout_s: float = 60, via: Node | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with closing((via or self.nodes[0]).client(timeout=5)) as c:
                    ready = [n for n in c.api.nodes() if n["Status"]["State"] == "ready"
                             and n["Spec"].get("Availability") == "active"]
                if len(ready) >= count:
                    return
            except UNSETTLED:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"swarm not {count} ready nodes after {timeout_s}s")
            time.sleep(0.2)

    def wait_schedulable(self, *, image: str, timeout_s: float = 120, via: Node | None = None) -> None:
        """Every node runs a task again: a global service of `image` has a running task on each node, then goes.

        "ready" in the node list is the manager's view; after a partition or a node's restart a node can read ready
        while its dispatcher session is still being re-made and tasks sent to it sit at "assigned". A drill that
        changed the cluster waits for this before the next test gets it.
        """
        deadline = time.monotonic() + timeout_s
        name = f"{PREFIX}{self.run}-probe-{secrets.token_hex(3)}"
        node = via or self.nodes[0]
        with closing(node.client(timeout=20)) as c:
            c.api.create_service(
                docker.types.TaskTemplate(container_spec=docker.types.ContainerSpec(image=image)),
                name=name, mode=docker.types.ServiceMode("global"), labels={f"{PREFIX}probe": self.run},
            )
            tasks: list[dict[str, object]] = []
            try:
                while True:
                    try:
                        tasks = c.api.tasks(filters={"service": name, "desired-state": "running"})
                        running = {t["NodeID"] for t in tasks if t["Status"]["State"] == "running"}
                        if len(running) >= len(self.nodes):
                            return
                    except UNSETTLED:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"swarm: a task did not run on every node within {timeout_s:g}s: {tasks}")
                    time.sleep(0.3)
            finally:
                with suppress(*UNSETTLED):
                    c.api.remove_service(name)  # else the run's teardown removes it with every other service

    def load_images(self, source: docker.DockerClient, tags: list[str]) -> None:
        """`docker save` from the main engine (cached by image id), `docker load` onto every node in parallel."""
        for tag in tags:
            tar = _saved_image(source, tag)
            errors: list[BaseException] = []

            def load(node: Node) -> None:
                try:
                    with closing(node.client(timeout=300)) as c, tar.open("rb") as f:
                        c.api.load_image(f)
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    errors.append(exc)

            threads = [threading.Thread(target=load, args=(n,)) for n in self.nodes if n.running()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise RuntimeError(f"loading {tag} onto the swarm nodes failed: {errors[0]}")

    def start_livekit(self, *, api_key: str = "swarmkey", on_host: bool = False) -> HubLiveKit | LiveKitServer:
        """LiveKit inside the hub namespace (on the bridge every node reaches), or `on_host`: in the test's own
        namespace, bound to loopback and to the host's veth address on the run's subnet, which it announces as
        its node IP. Announcing an address the nodes cannot route to (loopback, the host's main address: a node
        has no default route) lets an agent's signalling connect (it is listed) while ICE never completes."""
        if on_host:
            lk = LiveKitServer(api_key=api_key, api_secret=secrets.token_hex(32), port=free_port(), agent_gateway=self.host_ip)
            self.livekit = lk.start()
        else:
            self.livekit = HubLiveKit(host=self.hub_ip, netns=self.hub, api_key=api_key, api_secret=secrets.token_hex(32)).start()
        return self.livekit

    def agent_livekit_url(self) -> str:
        """The URL agents on the nodes use (the host-side server's own URL is loopback, which is the node's own)."""
        assert self.livekit is not None
        if isinstance(self.livekit, LiveKitServer):
            return f"ws://{self.host_ip}:{self.livekit.port}"
        return self.livekit.url

    # ---- drills ----------------------------------------------------------------------------

    def node_named(self, hostname: str) -> Node:
        return next(n for n in self.nodes if n.name == hostname)

    def stop_node(self, node: Node) -> None:
        """Take a node down the way an operator or a crash-free reboot would: dockerd stopped by its pidfile."""
        node.stop()

    def cut_link(self, node: Node, *, up: bool = False) -> None:
        """A partition: the node's veth on the hub bridge set down (or up again)."""
        sh("ip", "-n", self.hub, "link", "set", f"v{node.index}", "up" if up else "down")

    # ---- teardown --------------------------------------------------------------------------

    def destroy(self) -> None:
        marks = self.host_marks() if hasattr(self, "_docker0") else []
        if self.livekit is not None:
            self.livekit.stop()
        self.leftovers = marks + destroy_run(self.run, nodes=self.nodes, hub=self.hub, host_if=self.host_if)
        self.owner_file.unlink(missing_ok=True)
        if self.leftovers:
            raise RuntimeError(f"swarm run {self.run} left things behind: {self.leftovers}")
