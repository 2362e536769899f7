"""gVisor on a real test node (devtools/kube_node.py): a `runsc` handler in the node's own containerd and the
RuntimeClass that names it.

Debian ships `runsc` (gVisor 2022-12-19) but not gVisor's containerd shim (containerd-shim-runsc-v1), so the
handler is containerd's own runc shim with `runsc` as its OCI binary (BinaryName): every container of the pod,
the sandbox included, then runs on gVisor's kernel. The binary is a wrapper adding `--network=host`: gVisor's own
netstack refuses to start on these machines ("cannot run with network enabled in root network namespace"); with
it, gVisor uses the pod's own network namespace (its CNI veth, its policy) — not the node's or the host's.
runsc sees the CRI's annotations and runs the pod's containers as sub-containers of one sandbox (one gVisor kernel
per pod, as gVisor's own shim does).

What bit: `runsc start` of a sub-container spawns that container's gofer, which inherited the runc shim's output
pipe; the shim reads that pipe to EOF, so StartContainer hung for good. The wrapper gives `start` a log file
instead (errors still reach the shim through runsc's --log).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devtools.kube_cluster import KubeCluster

HANDLER = "runsc"  # the containerd runtime name, the RuntimeClass's handler and its name
RUNSC = Path("/usr/bin/runsc")


def runsc_wrapper(base: Path) -> Path | None:
    """Write the OCI binary the `runsc` handler calls (None when runsc is not installed: the handler is left out)."""
    runsc = Path(shutil.which("runsc") or RUNSC)
    if not runsc.is_file():
        return None
    wrapper = base / "runsc-host-network"
    log = base / "runsc-start.log"
    # Flags go before the subcommand the runc shim appends (`--root … --log … create --bundle …`).
    wrapper.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = start ] && exec {runsc} --network=host "$@" >>{log} 2>&1 </dev/null; done\n'
        f'exec {runsc} --network=host "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def containerd_runtime(cri: str, wrapper: Path, *, state: Path) -> str:
    """The containerd 1.6 config section registering the handler (runc's shim, runsc as its binary); its state
    under the node's own state dir (the shim's default, /run/containerd/runc/k8s.io, is the host's)."""
    return f"""    [{cri}.containerd.runtimes.{HANDLER}]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.{HANDLER}.options]
        BinaryName = "{wrapper}"
        Root = "{state / 'runsc'}"
        SystemdCgroup = false
"""


def ensure_runtime_class(cluster: "KubeCluster", *, name: str = HANDLER) -> None:
    """The RuntimeClass pods name (runtimeClassName) to run under gVisor; cluster-scoped, idempotent."""
    resp = cluster._api("POST", "/apis/node.k8s.io/v1/runtimeclasses",
                        {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": HANDLER})
    if resp.status_code not in (201, 409):
        raise RuntimeError(f"create RuntimeClass {name}: {resp.status_code} {resp.text[:300]}")


def delete_runtime_class(cluster: "KubeCluster", *, name: str = HANDLER) -> None:
    cluster._api("DELETE", f"/apis/node.k8s.io/v1/runtimeclasses/{name}")
