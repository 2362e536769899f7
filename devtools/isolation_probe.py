"""Run inside an agent container (`python3 -c <this file> <json targets>`): try everything an agent must not
reach or do, and the few things it must, and print one JSON object {check: {"ok": bool, "detail": str}}.

"ok" means the attempt *succeeded*. Standard library only: it runs on the agent image's own Python.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 2.0


def tcp(host: str, port: int) -> dict[str, object]:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            return {"ok": True, "detail": "connected"}
    except OSError as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}


def http(method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None) -> dict[str, object]:
    req = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return {"ok": True, "status": resp.status, "detail": resp.read(200).decode(errors="replace")}
    except urllib.error.HTTPError as exc:  # the server answered, but refused
        return {"ok": False, "status": exc.code, "detail": exc.read(200).decode(errors="replace")}
    except OSError as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}


def unix(path: str) -> dict[str, object]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(TIMEOUT_S)
            s.connect(path)
            return {"ok": True, "detail": "connected"}
    except OSError as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}


def raw(family: int, kind: int, proto: int) -> dict[str, object]:
    try:
        socket.socket(family, kind, proto).close()
        return {"ok": True, "detail": "opened"}
    except OSError as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}


def write(path: str) -> dict[str, object]:
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        return {"ok": True, "detail": "written"}
    except OSError as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}


def become_root() -> dict[str, object]:
    try:
        os.setuid(0)
        return {"ok": os.geteuid() == 0, "detail": f"euid {os.geteuid()}"}
    except OSError as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}


def su() -> dict[str, object]:
    """A setuid helper (su) must not lift us to root: no-new-privileges and no password."""
    import subprocess

    for binary in ("/bin/su", "/usr/bin/su"):
        if os.path.exists(binary):
            try:
                out = subprocess.run([binary, "-c", "id -u", "root"], input=b"\n", capture_output=True, timeout=5)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
            got_root = out.returncode == 0 and out.stdout.strip() == b"0"
            return {"ok": got_root, "detail": f"rc {out.returncode}: {(out.stdout + out.stderr).decode(errors='replace')[:200]}"}
    return {"ok": False, "detail": "no su binary"}


def status_fields() -> dict[str, str]:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs"):
                fields[key] = value.strip()
    return fields


def host_services(t: dict) -> dict[str, object]:
    """Services the test bound to every address of the host (0.0.0.0): out of reach through the gateway and through
    any other address of the host, while LiveKit's port on the gateway answers."""
    out: dict[str, object] = {}
    for port in t.get("host_service_ports", []):
        for host in [t["gateway"], *t.get("host_addresses", [])]:
            out[f"host_service_{port}_{host}"] = http("GET", f"http://{host}:{port}/")
    return out


def main() -> None:
    t = json.loads(sys.argv[1])
    gw, lk = t["gateway"], t["livekit_port"]
    token = os.environ.get("LIVEKIT_TOKEN", "")
    out: dict[str, object] = host_services(t)
    if "orch_port" in t:  # the full probe (the served orchestrator, PostgreSQL, the other tenant, LiveKit's API)
        out.update(tenant_checks(t, gw=gw, lk=lk, token=token))
    out["raw_socket_icmp"] = raw(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    out["raw_socket_packet"] = raw(socket.AF_PACKET, socket.SOCK_RAW, 0x0300)
    for path in ("/app/probe-write", "/etc/probe-write", "/probe-write", "/opt/venv/probe-write"):
        out[f"write_{path}"] = write(path)
    out["setuid_root"] = become_root()
    out["su_root"] = su()
    # What an agent must be able to do: reach its own LiveKit (the server, and its token accepted for its room),
    # and scribble in /tmp.
    own = {
        "livekit_http": http("GET", f"http://{gw}:{lk}/"),
        "livekit_validate_own_token": http("GET", f"http://{gw}:{lk}/rtc/validate?access_token={token}"),
        "write_tmp": write("/tmp/probe-write"),
    }
    print(json.dumps({"must_fail": out, "must_work": own, "status": status_fields(),
                      "env_livekit_url": os.environ.get("LIVEKIT_URL", "")}))


def tenant_checks(t: dict, *, gw: str, lk: int, token: str) -> dict[str, object]:
    orch, pg = t["orch_port"], t["pg_port"]
    out: dict[str, object] = {}
    for where, host in (("loopback", "127.0.0.1"), ("gateway", gw)):
        out[f"orch_tcp_{where}"] = tcp(host, orch)
        out[f"orch_trigger_{where}"] = http("POST", f"http://{host}:{orch}/api/v1/trigger-agent",
                                            headers={"Content-Type": "application/json"}, body=json.dumps(t["trigger_body"]).encode())
        out[f"orch_admin_{where}"] = http("GET", f"http://{host}:{orch}/api/v1/admin/containers")
        out[f"orch_metrics_{where}"] = http("GET", f"http://{host}:{orch}/metrics")
        out[f"postgres_{where}"] = tcp(host, pg)
        out[f"docker_tcp_2375_{where}"] = tcp(host, 2375)
        out[f"docker_tcp_2376_{where}"] = tcp(host, 2376)
    for path in ("/var/run/docker.sock", "/run/docker.sock"):
        out[f"docker_socket_{path}"] = unix(path)
    out["other_tenant_agent"] = tcp(t["other_agent_ip"], t["other_agent_port"])
    twirp = f"http://{gw}:{lk}/twirp/livekit.RoomService/"
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    other = json.dumps({"room": t["other_room"]}).encode()
    out["livekit_list_participants_other_room"] = http("POST", twirp + "ListParticipants", headers=auth, body=other)
    out["livekit_remove_participant_other_room"] = http(
        "POST", twirp + "RemoveParticipant", headers=auth,
        body=json.dumps({"room": t["other_room"], "identity": t["other_identity"]}).encode())
    out["livekit_delete_other_room"] = http("POST", twirp + "DeleteRoom", headers=auth, body=other)
    out["livekit_list_rooms"] = http("POST", twirp + "ListRooms", headers=auth, body=b"{}")
    return out


if __name__ == "__main__":
    main()
