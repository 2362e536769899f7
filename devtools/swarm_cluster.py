"""A real Docker Swarm of N nodes on this one machine, made for a test run and torn down after it.

Each node is a network namespace of its own (`sw-<run>-nK`) with a veth on a private bridge that sits in
one more namespace (`sw-<run>-hub`), a hostname of its own (`unshare --uts`) and a dockerd of its own
(socket, data root, exec root, pidfile, config file; its docker0 lives in the node's namespace and it
runs with `--iptables=false`, so the host's engine, its docker0 and its iptables are never touched).
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
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import docker
import yaml

from devtools.livekit_server import livekit_binary

PREFIX = "sw-"
_RUN_RE = re.compile(r"^sw-([0-9a-f]{4})-(hub|n\d+)$")
LIVEKIT_PORT, LIVEKIT_TCP, LIVEKIT_UDP = 7880, 7881, 7882


def sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one command; a failure raises with the command and its stderr (the report names both)."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_naming(needle: str) -> list[tuple[int, str]]:
    """Processes whose command line mentions `needle` (a node's exec root): leftovers after teardown."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            found.append((int(entry.name), cmd.strip()))
    return found


def _mounts_under(*roots: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)  # deepest first


@dataclass
class Node:
    run: str
    index: int
    address: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.run}-n{self.index}"

    @property
    def netns(self) -> str:
        return self.name

    @property
    def sock(self) -> Path:
        return Path(f"/run/{self.name}.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    @property
    def data_root(self) -> Path:
        return Path(f"/var/lib/{self.name}")

    @property
    def exec_root(self) -> Path:
        return Path(f"/run/{self.name}")  # short: containerd's socket path lives under it

    @property
    def pidfile(self) -> Path:
        return Path(f"/run/{self.name}.pid")

    @property
    def config_file(self) -> Path:
        return Path(f"/run/{self.name}.json")

    @property
    def log_path(self) -> Path:
        return Path(f"/tmp/{self.name}.log")

    def client(self, *, timeout: int = 30) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, timeout_s: float = 40) -> None:
        # The host's /etc/docker/daemon.json must not apply (live-restore there would refuse swarm mode).
        self.config_file.write_text("{}")
        # Data root on a tmpfs: loading the agent image onto three nodes and deleting ~60k files again
        # took minutes on this disk (unlink ~1.6 ms each); in memory both take seconds.
        self.data_root.mkdir(parents=True, exist_ok=True)
        if not _mounts_under(self.data_root):
            sh("mount", "-t", "tmpfs", "-o", "size=6g,mode=0711", "tmpfs", str(self.data_root))
        dockerd = (
            f"exec dockerd --config-file {self.config_file} --host {self.url} --data-root {self.data_root}"
            f" --exec-root {self.exec_root} --pidfile {self.pidfile} --iptables=false --ip-masq=false"
        )
        # nsenter --net (not `ip netns exec`, which remounts /sys: "Devices cgroup isn't mounted").
        cmd = ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--uts", "sh", "-c", f"hostname {self.name} && {dockerd}"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd of {self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with closing(self.client(timeout=5)) as c:
                    c.ping()
                break
            except docker.errors.DockerException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd of {self.name} not answering after {timeout_s}s:\n{self.log_tail()}") from None
                time.sleep(0.1)
        # Its containerd must be its own (supervised, under its exec root), never a system one shared with the main engine.
        if not processes_naming(f"{self.exec_root}/containerd/containerd.toml"):
            raise RuntimeError(f"dockerd of {self.name} did not start its own containerd under {self.exec_root}")

    def stop(self, *, timeout_s: float = 30) -> None:
        """SIGTERM by pidfile (a manager takes ~9 s), SIGKILL after `timeout_s`."""
        pid = self._pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                try:
                    self.proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            if self.proc is not None and self.proc.pid == pid:
                self.proc.wait()

    def _pid(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


@dataclass
class HubLiveKit:
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
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"livekit-server exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.http_url, timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"livekit-server in {self.netns} not ready after {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path and self.log_path.exists() else ""


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
        self.livekit: HubLiveKit | None = None
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
            except docker.errors.DockerException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"swarm not {count} ready nodes after {timeout_s}s")
            time.sleep(0.2)

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

    def start_livekit(self, *, api_key: str = "swarmkey") -> HubLiveKit:
        self.livekit = HubLiveKit(host=self.hub_ip, netns=self.hub, api_key=api_key, api_secret=secrets.token_hex(32)).start()
        return self.livekit

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


def destroy_run(run: str, *, nodes: list[Node], hub: str, host_if: str) -> list[str]:
    """Tear one run down in the safe order; returns what could not be cleaned (empty when all is gone)."""
    # 1. Services, then containers, while the daemons still answer (a stopped dockerd leaves shims behind).
    for node in nodes:  # any manager that answers removes every service of the run's swarm
        if node._pid() is None:
            continue
        try:
            with closing(node.client(timeout=10)) as c:
                for svc in c.api.services():
                    try:
                        c.api.remove_service(svc["ID"])
                    except docker.errors.NotFound:
                        pass
            break
        except docker.errors.DockerException:
            continue
    for node in nodes:
        if node._pid() is None:
            continue
        try:
            with closing(node.client(timeout=20)) as c:
                for row in c.api.containers(all=True):
                    try:
                        c.api.remove_container(row["Id"], force=True)
                    except docker.errors.DockerException:
                        pass
        except docker.errors.DockerException:
            pass
    # 2. The daemons, by pidfile, in parallel (a manager takes ~9 s to stop).
    threads = [threading.Thread(target=n.stop) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 3. Anything still naming a node's exec root (containerd-shims of containers that outlived their dockerd).
    for node in nodes:
        for pid, _ in processes_naming(str(node.exec_root) + "/"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # Any livekit-server or other process still inside one of the run's namespaces.
    for entry in Path("/run/netns").glob(f"{PREFIX}{run}-*"):
        for pid in sh("ip", "netns", "pids", entry.name, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    # 4. Mounts under the roots, deepest first; then the files.
    for node in nodes:
        for point in _mounts_under(node.data_root, node.exec_root):
            sh("umount", "-l", point, check=False)
        for path in (node.data_root, node.exec_root):
            shutil.rmtree(path, ignore_errors=True)
        for leftover in (node.sock, node.pidfile, node.config_file):
            leftover.unlink(missing_ok=True)
    # 5. The namespaces (the veth pairs and the host's interface go with them).
    for name in [n.netns for n in nodes] + [hub]:
        if Path(f"/run/netns/{name}").exists():
            sh("ip", "netns", "del", name, check=False)
    # 6. Check.
    left = []
    for node in nodes:
        left += [f"process {pid}: {cmd[:120]}" for pid, cmd in processes_naming(str(node.exec_root) + "/")]
        left += [f"mount {p}" for p in _mounts_under(node.data_root, node.exec_root)]
    left += [f"netns {p.name}" for p in Path("/run/netns").glob(f"{PREFIX}{run}-*")] if Path("/run/netns").exists() else []
    if sh("ip", "link", "show", host_if, check=False).returncode == 0:
        sh("ip", "link", "del", host_if, check=False)
    return left


def sweep_stale() -> None:
    """Tear down runs whose owner process is gone (a test run killed with SIGKILL cannot clean up itself)."""
    runs: dict[str, set[str]] = {}
    for entry in Path("/run/netns").glob(f"{PREFIX}*") if Path("/run/netns").exists() else []:
        if m := _RUN_RE.match(entry.name):
            runs.setdefault(m.group(1), set()).add(m.group(2))
    for owner in Path("/run").glob(f"{PREFIX}????.owner"):
        runs.setdefault(owner.name[len(PREFIX):len(PREFIX) + 4], set())
    for run, parts in runs.items():
        owner = Path(f"/run/{PREFIX}{run}.owner")
        try:
            info = json.loads(owner.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("pid") and _alive(int(info["pid"])):
            continue
        count = max([int(p[1:]) for p in parts if p.startswith("n")] + [int(info.get("nodes", 0))] + [0])
        destroy_run(run, nodes=[Node(run, k, "") for k in range(1, count + 1)], hub=f"{PREFIX}{run}-hub", host_if=f"sw{run}r")
        owner.unlink(missing_ok=True)
