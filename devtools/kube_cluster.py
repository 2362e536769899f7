"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver (RBAC, token auth),
kube-scheduler, kube-controller-manager, and kwok turning three Node objects into simulated nodes.

kwok plays these nodes (pods get scheduled and reach Running; no container runs). Tests that need a pod to
really run add a kubelet node of their own (devtools/kube_node.py), which this cluster is ready for: a CA
(`ca`) that kubelets and the apiserver authenticate each other with, and the Node authorizer. The binaries
come from scripts/build-kube (cached under ~/.cache/agent-orchestrator/bin/kube-<version>/).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.kube_pki import CertificateAuthority
from devtools.livekit_server import CACHE_BIN, free_port

KUBE_VERSION = os.environ.get("KUBE_VERSION", "v1.37.2")
NODES = ("kwok-node-0", "kwok-node-1", "kwok-node-2")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def kube_bin_dir() -> Path:
    d = Path(os.environ.get("KUBE_BIN_DIR") or CACHE_BIN / f"kube-{KUBE_VERSION}")
    missing = [b for b in ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "kwok") if not (d / b).is_file()]
    if missing or not (d / "kwok-stages.yaml").is_file():
        raise RuntimeError(f"Kubernetes binaries missing in {d} ({', '.join(missing) or 'kwok-stages.yaml'}): run scripts/build-kube")
    if not shutil.which("etcd"):
        raise RuntimeError("etcd not found: run scripts/build-kube (it installs Debian's etcd-server)")
    return d


def kubeconfig(*, server: str, token: str, namespace: str = "default", user: str = "user") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        # A throwaway self-signed serving certificate on loopback: skip its verification.
        "clusters": [{"name": "test", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user, "namespace": namespace}}],
    }


@dataclass
class KubeCluster:
    workdir: Path
    bindir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    etcd_port: int = 0
    api_port: int = 0
    admin_token: str = ""
    # Without the apiserver's watch cache for pods, watches read etcd directly, so compacting etcd really
    # expires old resourceVersions (410 Gone); with it, a young cluster serves every version since start-up.
    pod_watch_cache: bool = True
    # Signs the apiserver's client certificate for kubelets and real nodes' certificates (devtools/kube_node.py).
    ca: CertificateAuthority = field(init=False)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, *, timeout_s: float = 60.0) -> "KubeCluster":
        try:
            self._start(timeout_s)
        except BaseException:
            print(self.dump_logs())
            self.stop()
            raise
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        log.close()

    def _start(self, timeout_s: float) -> None:
        w = self.workdir
        self.etcd_port, peer = free_port(), free_port()
        self._spawn("etcd", [
            "etcd", "--name", "test", "--data-dir", str(w / "etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer}", "--logger=zap", "--log-level=warn",
        ])
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (w / "sa.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                                     serialization.NoEncryption()))
        self.admin_token = secrets.token_hex(24)
        (w / "tokens.csv").write_text(f'{self.admin_token},admin,admin-uid,"system:masters"\n')
        self.api_port = free_port()
        self.ca = CertificateAuthority(w / "pki").create()
        to_kubelets = self.ca.issue("apiserver-kubelet-client", common_name="kube-apiserver-kubelet-client",
                                    organizations=("system:masters",), client=True)
        self._wait(lambda: httpx.get(f"{self.etcd_url}/health", timeout=1).status_code == 200, timeout_s, "etcd healthy")
        self._spawn("kube-apiserver", [
            str(self.bindir / "kube-apiserver"), f"--etcd-servers={self.etcd_url}", "--bind-address=127.0.0.1",
            f"--secure-port={self.api_port}", f"--cert-dir={w / 'certs'}", "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={w / 'sa.key'}", f"--service-account-signing-key-file={w / 'sa.key'}",
            f"--token-auth-file={w / 'tokens.csv'}", "--authorization-mode=Node,RBAC", "--service-cluster-ip-range=10.96.0.0/16",
            # Real nodes: kubelets authenticate with certificates from `ca`, and so does the apiserver towards them
            # (logs, exec), verifying their serving certificates; reached by their InternalIP (a veth of their own).
            f"--client-ca-file={self.ca.cert_path}", f"--kubelet-client-certificate={to_kubelets.cert}",
            f"--kubelet-client-key={to_kubelets.key}", f"--kubelet-certificate-authority={self.ca.cert_path}",
            "--kubelet-preferred-address-types=InternalIP",
            "--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false", "--v=1",
            # Debian's etcd 3.4.23 cannot do the progress requests streaming lists need: kwok's (client-go 0.36)
            # watches then kept ending in errors and it saw new pods only on relists, 1-50 s late. Without
            # WatchList on the server, clients fall back to list+watch and pods run ~50 ms after scheduling.
            "--feature-gates=WatchList=false",
            *([] if self.pod_watch_cache else ["--watch-cache-sizes=pods#0"]),
        ])
        self.admin_kubeconfig.write_text(yaml.safe_dump(kubeconfig(server=self.server, token=self.admin_token, user="admin")))
        self._wait(lambda: self._api("GET", "/readyz").status_code == 200, timeout_s, "kube-apiserver ready")
        kc = str(self.admin_kubeconfig)
        self._spawn("kube-scheduler", [
            str(self.bindir / "kube-scheduler"), f"--kubeconfig={kc}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--v=1",
        ])
        self._spawn("kube-controller-manager", [
            str(self.bindir / "kube-controller-manager"), f"--kubeconfig={kc}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", f"--service-account-private-key-file={w / 'sa.key'}",
            f"--root-ca-file={w / 'certs' / 'apiserver.crt'}", "--use-service-account-credentials=false", "--v=1",
            # kwok's condition heartbeats come every 20-45 s; a busy CI machine must not turn nodes NotReady.
            "--node-monitor-grace-period=10m",
        ])
        self._spawn("kwok", [
            str(self.bindir / "kwok"), f"--kubeconfig={kc}", f"--config={self.bindir / 'kwok-stages.yaml'}",
            # Pod IPs from the CIDR are only status values; the node's "kubelet" address is loopback with nothing
            # listening, so the apiserver's log/exec requests are refused at once and never leave the machine.
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake", "--cidr=10.0.0.1/24", "--node-ip=127.0.0.1",
            f"--node-port={free_port()}", f"--server-address=127.0.0.1:{free_port()}",
        ])
        for node in NODES:
            self.create_node(node)
        self._wait(self._nodes_ready, timeout_s, "3 kwok nodes Ready")
        self._wait(lambda: self._api("GET", "/api/v1/namespaces/default/serviceaccounts/default").status_code == 200,
                   timeout_s, "controller-manager made the default ServiceAccount")

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def dump_logs(self, n: int = 3000) -> str:
        out = []
        for name in ("etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager", "kwok"):
            path = self.workdir / f"{name}.log"
            if path.exists():
                out.append(f"==== {name} ====\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(out)

    def _wait(self, probe: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}")
            try:
                if probe():
                    return
            except (httpx.HTTPError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(0.2)

    # ---- API helpers (admin) ----------------------------------------------------------------
    def _api(self, method: str, path: str, body: Any = None, *, token: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.request(method, f"{self.server}{path}", json=body, params=params or None, headers=headers, verify=False, timeout=30)

    def api(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        resp = self._api(method, path, body, **params)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def _nodes_ready(self) -> bool:
        items = self.api("GET", "/api/v1/nodes")["items"]
        ready = [n for n in items if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))]
        return len(ready) >= len(NODES)

    def create_node(self, name: str) -> None:
        capacity = {"cpu": "1000", "memory": "4Ti", "pods": "1000"}
        self.api("POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {KWOK_ANNOTATION: "fake"}, "labels": {"type": "kwok", "kubernetes.io/hostname": name}},
            "status": {"capacity": capacity, "allocatable": capacity},
        })

    def create_namespace(self, name: str, *, labels: dict[str, str] | None = None) -> None:
        self.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}})

    def delete_namespace(self, name: str) -> None:
        self._api("DELETE", f"/api/v1/namespaces/{name}", {"gracePeriodSeconds": 0}, gracePeriodSeconds=0)

    def pods(self, namespace: str, *, selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else {}
        return self.api("GET", f"/api/v1/namespaces/{namespace}/pods", **params)["items"]

    def kubectl(self, *args: str, kubeconfig_path: Path | None = None, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", f"--kubeconfig={kubeconfig_path or self.admin_kubeconfig}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, input=input, timeout=120)

    def service_account_kubeconfig(self, *, namespace: str, name: str) -> Path:
        """A kubeconfig holding a token for that ServiceAccount (TokenRequest), to test RBAC as it."""
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration=2h").stdout.strip()
        path = self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(server=self.server, token=token, namespace=namespace, user=name)))
        return path

    def etcd_revision(self) -> int:
        resp = httpx.post(f"{self.etcd_url}/v3/kv/range", json={"key": "Lw=="}, timeout=5)  # "/" base64
        return int(resp.json()["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision: every older resourceVersion is now 410 Gone."""
        rev = self.etcd_revision()
        httpx.post(f"{self.etcd_url}/v3/kv/compaction", json={"revision": str(rev), "physical": True}, timeout=10).raise_for_status()
        return rev


def start_cluster(*, pod_watch_cache: bool = True) -> KubeCluster:
    # etcd fsyncs every write: on tmpfs (when there is one) that costs nothing, and the data is throwaway.
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    workdir = Path(tempfile.mkdtemp(prefix="kube-", dir=base))
    return KubeCluster(workdir=workdir, bindir=kube_bin_dir(), pod_watch_cache=pod_watch_cache).start()


def pod_summary(pods: list[dict[str, Any]]) -> str:
    """What a failing test prints about the pods it saw."""
    return json.dumps([{"name": p["metadata"]["name"], "phase": p["status"].get("phase"), "node": p["spec"].get("nodeName"),
                        "conditions": p["status"].get("conditions")} for p in pods], indent=1)[:6000]
