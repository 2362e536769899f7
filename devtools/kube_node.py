"""A real Kubernetes node for the test cluster: a kubelet with its own containerd 1.6 and CNI bridge, all
inside a network namespace of its own, so pods really run next to the simulated kwok nodes.

Why its own namespace: the kubelet, containerd's CNI bridge and iptables rules (masquerade, a policy
enforcer) stay there; the host's engine, bridges and iptables are never touched. The only things in the
host's namespace are one end of the node's veth (a private /24 the run picks), a route to the node's pod
/24 through it, and a TCP relay from there to the apiserver's loopback port. Everything is undone by `stop()`, also after a failed start:
pods deleted, container processes killed (by our cgroup root), shims and daemons stopped, mounts
unmounted, the namespace deleted, and the kernel tunables the kubelet sets put back.

The node registers with a taint (`TAINT`) and a label (`LABEL`), so only pods meant for it land there
(the kwok nodes keep every other test's pods).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devtools.kube_cluster import KubeCluster
from devtools.kube_gvisor import containerd_runtime, runsc_wrapper
from devtools.kube_node_teardown import PREFIX, NodeTeardown, sh
from devtools.netpol import kube_router_binary, start_enforcer

LABEL = ("agent-orchestrator.dev/node", "real")
TAINT = {"key": "agent-orchestrator.dev/real-node", "value": "true", "effect": "NoSchedule"}
CNI_BIN = Path("/usr/lib/cni")
IMAGE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-orchestrator" / "kube-images"
# What kubelet's container manager writes when protectKernelDefaults is false (it refuses to start when
# they differ and it is true): remembered at start, restored at stop.
KERNEL_TUNABLES = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")


def _free_octet() -> int:
    routes = sh("ip", "-4", "route", "show", "table", "all").stdout
    taken = {int(m) for m in re.findall(r"10\.7[89]\.(\d+)\.", routes)}
    return secrets.choice([o for o in range(1, 250) if o not in taken])


def kubelet_binary(cluster: KubeCluster) -> Path:
    path = cluster.bindir / "kubelet"
    if not path.is_file():
        raise RuntimeError(f"kubelet missing in {cluster.bindir}: run scripts/build-kube (it builds and caches it)")
    for tool in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "docker"):
        if not any(Path(d, tool).is_file() for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/usr/bin"]):
            raise RuntimeError(f"{tool} not found: run scripts/build-kube (it installs containerd, runc, CNI plugins)")
    if not (CNI_BIN / "bridge").is_file():
        raise RuntimeError("CNI plugins missing in /usr/lib/cni: run scripts/build-kube (containernetworking-plugins)")
    return path


def saved_image(tag: str) -> Path:
    """`docker save` of `tag`, kept per image id (saving the agent image takes seconds; it rarely changes)."""
    image_id = sh("docker", "image", "inspect", "-f", "{{.Id}}", tag).stdout.strip().split(":")[-1][:16]
    stem = re.sub(r"[^A-Za-z0-9]+", "-", tag)
    path = IMAGE_CACHE / f"{stem}-{image_id}.tar"
    if not path.exists():
        IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
        for old in IMAGE_CACHE.glob(f"{stem}-*.tar"):
            old.unlink(missing_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        sh("docker", "save", "-o", str(partial), tag, timeout=300)
        partial.rename(path)
    return path


@dataclass
class RealNode(NodeTeardown):
    """One kubelet node of `cluster`; `start()` returns once the Node is Ready."""

    cluster: KubeCluster
    images: tuple[str, ...]
    sandbox_image: str
    enforce_policy: bool = True  # kube-router's NetworkPolicy controller in the node's namespace (devtools/netpol.py)
    run: str = field(default_factory=lambda: secrets.token_hex(2))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    saved_tunables: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        octet = _free_octet()
        self.name = f"{PREFIX}{self.run}-n1"
        self.netns = self.name
        self.host_if = f"kn{self.run}h"
        self.host_ip = f"10.78.{octet}.1"  # the host's end of the veth: the relay, and where tests bind LiveKit
        self.node_ip = f"10.78.{octet}.2"
        self.pod_cidr = f"10.79.{octet}.0/24"
        self.base = Path(f"/var/lib/{PREFIX}{self.run}")  # containerd root, kubelet root-dir, logs
        self.state = Path(f"/run/{PREFIX}{self.run}")  # containerd state, its socket, pod netns mounts
        self.cgroup_root = f"/{PREFIX}{self.run}"
        self.sock = self.state / "containerd.sock"

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self, *, timeout_s: float = 90) -> "RealNode":
        kubelet = kubelet_binary(self.cluster)
        if self.enforce_policy:
            kube_router_binary()  # missing: say so before anything is made
        t0 = time.monotonic()
        try:
            self.saved_tunables = {t: Path("/proc/sys", t).read_text().strip() for t in KERNEL_TUNABLES}
            self._network()
            self._cgroups()
            self._start_containerd(timeout_s)
            self._import_images()
            self.timings["images_imported_s"] = time.monotonic() - t0
            self._start_kubelet(kubelet)
            t1 = time.monotonic()
            self._wait(self.ready, timeout_s, f"node {self.name} Ready")
            self.timings["kubelet_to_ready_s"] = time.monotonic() - t1
            if self.enforce_policy:
                t2 = time.monotonic()
                start_enforcer(self)
                self.timings["enforcer_ready_s"] = time.monotonic() - t2
            self.timings["start_to_ready_s"] = time.monotonic() - t0
        except BaseException:
            print(self.dump_logs(), file=sys.stderr)
            self.stop()
            raise
        return self

    def _network(self) -> None:
        sh("ip", "netns", "add", self.netns)
        sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        # Born with its peer already in the node's namespace: the host sees only `host_if`.
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "-n", self.netns, "addr", "add", f"{self.node_ip}/24", "dev", "eth0")
        sh("ip", "-n", self.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.netns, "route", "add", "default", "via", self.host_ip)
        # Pods keep their own addresses up to the host (no NAT): WebRTC's ICE offers the pod's address, and with a
        # masquerade only peer-reflexive candidates were left — the agent joined signalling but never got media
        # through (it exited UNREACHABLE). The route goes away with host_if.
        sh("ip", "route", "add", self.pod_cidr, "via", self.node_ip, "dev", self.host_if)
        sh("nsenter", f"--net=/run/netns/{self.netns}", "sysctl", "-qw", "net.ipv4.ip_forward=1")  # this namespace's own

    def _cgroups(self) -> None:
        """Our own cgroup root in every v1 hierarchy: the kubelet's pods live under it, and stop() finds every
        container process there (a shim killed first would orphan them)."""
        for hierarchy in self._hierarchies():
            d = hierarchy / self.cgroup_root.lstrip("/")
            d.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # a new cpuset starts empty and refuses tasks until given cpus and mems
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((hierarchy / f).read_text())

    @staticmethod
    def _hierarchies() -> list[Path]:
        root = Path("/sys/fs/cgroup")
        if (root / "cgroup.controllers").exists():  # cgroup v2: one tree
            return [root]
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists())

    def _nsenter(self, name: str, args: list[str]) -> None:
        log = (self.base / f"{name}.log").open("ab")
        # nsenter --net, not `ip netns exec` (which remounts /sys, and containerd/kubelet then miss the cgroups).
        self.procs[name] = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.netns}", *args], stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def _start_containerd(self, timeout_s: float) -> None:
        for d in (self.base, self.state, self.base / "cni" / "net.d", self.base / "pod-logs"):
            d.mkdir(parents=True, exist_ok=True)
        cni = {
            "cniVersion": "1.0.0", "name": f"{PREFIX}{self.run}",
            "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": self.pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}],
                         "dataDir": str(self.base / "cni" / "ipam")},
            }],
        }
        (self.base / "cni" / "net.d" / "10-bridge.conflist").write_text(json.dumps(cni, indent=1))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        runsc = runsc_wrapper(self.base)  # the gVisor handler (devtools/kube_gvisor.py), when runsc is installed
        config = f"""version = 2
root = "{self.base / 'containerd'}"
state = "{self.state / 'containerd'}"
# Nothing here may lower an OOM score (no CAP_SYS_RESOURCE on these machines).
oom_score = 0
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.base / 'opt'}"
[{cri}]
  sandbox_image = "{self.sandbox_image}"
  # containerd gives sandboxes -998; without CAP_SYS_RESOURCE runc then fails ("can't get final child's PID").
  restrict_oom_score_adj = true
  # pod network namespaces under our state dir, not /var/run/netns
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
{containerd_runtime(cri, runsc, state=self.state) if runsc else ""}  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.base / 'cni' / 'net.d'}"
"""
        (self.base / "containerd.toml").write_text(config)
        self._nsenter("containerd", ["containerd", "--config", str(self.base / "containerd.toml"), "--log-level", "info"])
        self._wait(lambda: sh("ctr", "--address", str(self.sock), "version", check=False, timeout=5).returncode == 0,
                   timeout_s, "containerd answering")

    def _import_images(self) -> None:
        for tag in self.images:
            self.import_image(tag)

    def import_image(self, tag: str) -> None:
        """No registry: the engine's image goes in as a tarball; pods use it with IfNotPresent/Never."""
        sh("ctr", "--address", str(self.sock), "-n", "k8s.io", "images", "import", str(saved_image(tag)), timeout=300)

    def _start_kubelet(self, kubelet: Path) -> None:
        # The cluster's CA: the apiserver verifies this serving certificate and the kubelet the apiserver's client one.
        ca = self.cluster.ca
        serving = ca.issue(f"{self.name}-serving", common_name=self.name, server_ips=(self.node_ip,), server_names=(self.name,))
        client = ca.issue(f"{self.name}-client", common_name=f"system:node:{self.name}", organizations=("system:nodes",), client=True)
        relay_port = self._start_relay()
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "test", "cluster": {
                "server": f"https://{self.host_ip}:{relay_port}",
                # the apiserver's own self-signed certificate, which names "kubernetes" (the relay passes TLS through)
                "certificate-authority": str(self.cluster.workdir / "certs" / "apiserver.crt"), "tls-server-name": "kubernetes"}}],
            "users": [{"name": "node", "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
            "contexts": [{"name": "node", "context": {"cluster": "test", "user": "node"}}],
        }
        (self.base / "kubelet.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # kubelet >= 1.35 refuses cgroup v1 otherwise; these machines have v1
            "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root, "failSwapOn": False,
            "makeIPTablesUtilChains": False,  # (in our namespace anyway) no KUBE-FIREWALL chains
            "protectKernelDefaults": False,  # it then sets KERNEL_TUNABLES; stop() restores them
            "oomScoreAdj": 0,
            "address": self.node_ip, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "tlsCertFile": str(serving.cert), "tlsPrivateKeyFile": str(serving.key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.cluster.ca.cert_path)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.sock}", "imageServiceEndpoint": f"unix://{self.sock}",
            "podLogsDir": str(self.base / "pod-logs"),
            "registerWithTaints": [TAINT],
            "resolvConf": "/etc/resolv.conf",
            # A shared CI disk must not make it evict our pods or delete the imported images.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "nodeStatusReportFrequency": "10s", "syncFrequency": "10s",
            "serializeImagePulls": False, "maxPods": 30,
        }
        (self.base / "kubelet.yaml").write_text(yaml.safe_dump(config))
        self._nsenter("kubelet", [
            str(kubelet), f"--config={self.base / 'kubelet.yaml'}", f"--kubeconfig={self.base / 'kubelet.kubeconfig'}",
            f"--root-dir={self.base / 'kubelet'}", f"--node-ip={self.node_ip}", f"--hostname-override={self.name}",
            f"--node-labels={LABEL[0]}={LABEL[1]}", "--v=2",
        ])

    def _start_relay(self) -> int:
        port = 6443  # free by construction: nothing else listens on our own veth's address
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tcp_relay.py")), f"{self.host_ip}:{port}",
                                 f"127.0.0.1:{self.cluster.api_port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs["relay"] = proc
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"apiserver relay did not start: {line}")
        return port

    # ---- state ----------------------------------------------------------------------------------
    def node(self) -> dict[str, Any] | None:
        resp = self.cluster._api("GET", f"/api/v1/nodes/{self.name}")
        return resp.json() if resp.status_code == 200 else None

    def ready(self) -> bool:
        node = self.node()
        conds = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def _wait(self, probe: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} of node {self.name} exited with {proc.returncode} while waiting for {what}")
            try:
                if probe():
                    return
            except (OSError, ValueError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(0.2)

    def dump_logs(self, n: int = 4000) -> str:
        out = []
        for name in ("containerd", "kubelet", "kube-router"):
            path = self.base / f"{name}.log"
            if path.exists():
                out.append(f"==== {self.name} {name} ====\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(out)
