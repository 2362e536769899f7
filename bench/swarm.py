"""The swarm runtime on a real 3-node swarm (devtools.swarm_cluster), each figure next to a same-run baseline.

  trigger → task running / → agent listed by LiveKit, next to a bare service create of the same image
  reuse latency and throughput; a burst of distinct rooms (duplicates, containers/s)
  one reconcile pass over N services (API calls per pass, seconds)
  node loss (a node's dockerd stopped) → task running elsewhere / agent back in the room, seconds

Run: `.venv/bin/python -m bench.swarm` (root; about 4-6 minutes). Bounded: fixed counts, a hard
deadline, and the whole swarm (namespaces, daemons, mounts) is torn down in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import docker

from orchestrator.livekit.client import LiveKitGateway, agent_token
from orchestrator.core.models import ContainerStatus, LiveKitCredentials, Mode
from orchestrator.rules.naming import Label, agent_identity
from orchestrator.services.reconciler import Reconciler
from orchestrator.runtime.swarm.runtime import SwarmRuntime
from orchestrator.runtime.swarm.rules import current_task, service_spec, task_status
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.services.trigger import TriggerService
from tests.conftest import CLIENT_ID, write_tenants
from devtools.agent_room import eventually
from devtools.docker_helpers import TINY_IMAGE
from devtools.swarm_cluster import SwarmCluster

from bench.stats import ratio, summary

RESULTS = Path("bench-results")
AGENT_KIND = 4  # livekit ParticipantInfo.Kind.AGENT


class Bench:
    def __init__(self, swarm: SwarmCluster, tmp: Path, args: argparse.Namespace) -> None:
        self.swarm, self.args = swarm, args
        lk = swarm.livekit
        assert lk is not None
        self.creds = LiveKitCredentials(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret)  # type: ignore[arg-type]
        self.tenants = write_tenants(tmp / "tenants.yaml", lk)  # type: ignore[arg-type]
        self.gw = LiveKitGateway()
        self.out: dict[str, Any] = {}

    def settings(self, scope: str, k: int = 0, **over: Any) -> Settings:
        base: dict[str, Any] = dict(
            runtime="swarm", docker_host=self.swarm.nodes[k].url, scope=scope, tenants_file=self.tenants,
            agent_image=TINY_IMAGE, agent_memory="16m", agent_cpus=0.01, agent_stop_timeout_s=2, reconcile_enabled=False,
            agent_startup_timeout_s=0, max_agents_total=1000, max_agents_per_client=1000, restart_backoff_s=1.0,
        )
        return Settings(**{**base, **over})

    def service(self, settings: Settings, k: int = 0) -> tuple[TriggerService, SwarmRuntime]:
        rt = SwarmRuntime.from_settings(settings)
        return TriggerService(settings=settings, tenants=FileTenantStore(settings.tenants_file), livekit=self.gw, runtime=rt), rt

    def clean(self, scope: str) -> None:
        node = next(n for n in self.swarm.nodes if n.running())
        with closing(node.client(timeout=60)) as c:
            for s in c.api.services(filters={"label": f"{Label.SCOPE}={scope}"}):
                try:
                    c.api.remove_service(s["ID"])
                except docker.errors.NotFound:
                    pass

    async def agent_sid(self, room: str, slug: str = "farah") -> str | None:
        people = await self.gw.list_participants(self.creds, room=room)
        return next((p.sid for p in people if p.identity == agent_identity(slug) and p.kind == AGENT_KIND), None)

    # ---- trigger → running / → listed, next to a bare service create -------------------------------

    async def trigger_vs_bare(self) -> None:
        scope = f"bench-{secrets.token_hex(3)}"
        agent = self.args.agent_image
        # Half a CPU per agent: at 0.1 the Python start-up alone takes seconds (the default is 1 CPU).
        s = self.settings(scope, agent_image=agent, agent_memory="256m", agent_cpus=0.5)
        svc, rt = self.service(s)
        ours_run, ours_listed, bare_run, bare_listed = [], [], [], []
        try:
            for i in range(self.args.runs):
                room = f"{scope}-t{i}"
                t0 = time.perf_counter()
                await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="b", room_name=room)
                ours_run.append(time.perf_counter() - t0)
                await eventually(lambda: self.agent_sid(room), timeout=60, what="the agent in the room", interval=0.05)
                ours_listed.append(time.perf_counter() - t0)

                # Baseline: the same image as a bare one-replica service through the same SDK and manager, polled alike.
                broom = f"{scope}-b{i}"
                await self.gw.ensure_room(self.creds, room=broom, metadata="", empty_timeout_s=300, departure_timeout_s=20)
                env = {"LIVEKIT_URL": self.creds.url, "LIVEKIT_ROOM": broom, "AGENT_MODE": "voice",
                       "LIVEKIT_TOKEN": agent_token(self.creds, slug="farah", name="Farah", room=broom, ttl_s=600),
                       "AGENT_CONFIG": json.dumps({"id": "agent-farah", "slug": "farah", "name": "Farah"})}
                for c in await rt.list_managed(scope=scope):
                    await rt.remove(c.id)  # room for the baseline (0.5 CPU each)
                body = service_spec(
                    name=f"bare-{scope}-{i}", image=agent, labels={Label.SCOPE: scope}, env=env, memory="256m", cpus=0.5,
                    pids=256, network="host", restart_policy="on-failure", restart_max=3, restart_delay_s=1,
                    stop_timeout_s=2, constraints=[], spread=None,
                )
                api = rt.client.api
                t0 = time.perf_counter()
                sid = (await asyncio.to_thread(api.create_service, body["TaskTemplate"], name=body["Name"], labels=body["Labels"], mode=body["Mode"]))["ID"]

                async def running() -> bool:  # the same rule as the runtime's: container started (health may be pending)
                    tasks = await asyncio.to_thread(api.tasks, filters={"service": sid})
                    return task_status(current_task(tasks)).status is ContainerStatus.running

                await eventually(running, timeout=60, what="the task running", interval=0.02)
                bare_run.append(time.perf_counter() - t0)
                await eventually(lambda: self.agent_sid(broom), timeout=60, what="the bare service's agent in the room", interval=0.05)
                bare_listed.append(time.perf_counter() - t0)
                await asyncio.to_thread(api.remove_service, sid)  # room for the next pair (0.5 CPU each)
        finally:
            rt.close()
            self.clean(scope)
        self.out["trigger_running"] = {"ours": summary(ours_run), "bare_service_create": summary(bare_run), "ratio": ratio(ours_run, bare_run)}
        self.out["trigger_listed"] = {"ours": summary(ours_listed), "bare_service_create": summary(bare_listed), "ratio": ratio(ours_listed, bare_listed)}

    # ---- reuse, burst ------------------------------------------------------------------------------

    async def reuse_and_burst(self) -> None:
        scope = f"bench-{secrets.token_hex(3)}"
        s = self.settings(scope)
        svc, rt = self.service(s)
        try:
            room = f"{scope}-reuse"
            await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="b", room_name=room)
            lat = []
            for _ in range(self.args.runs * 5):
                t0 = time.perf_counter()
                out = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="b", room_name=room)
                lat.append(time.perf_counter() - t0)
                assert out.outcome.value == "reused"
            n = self.args.runs * 10
            t0 = time.perf_counter()
            await asyncio.gather(*(svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="b", room_name=room) for _ in range(n)))
            self.out["reuse"] = {"latency": summary(lat), "throughput_per_s": round(n / (time.perf_counter() - t0), 1)}

            burst = self.args.burst
            t0 = time.perf_counter()
            results = await asyncio.gather(*(
                svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="b", room_name=f"{scope}-burst{i}")
                for i in range(burst)
            ), return_exceptions=True)
            wall = time.perf_counter() - t0
            errors = [repr(r)[:120] for r in results if isinstance(r, BaseException)]
            listed = [c for c in await rt.list_managed(scope=scope) if c.labels.get(Label.ROOM, "").startswith(f"{scope}-burst")]
            rooms = [c.labels[Label.ROOM] for c in listed]
            by_node: dict[str, int] = {}
            for c in listed:
                by_node[c.node or "?"] = by_node.get(c.node or "?", 0) + 1
            self.out["burst"] = {
                "rooms": burst, "services": len(listed), "duplicates": len(rooms) - len(set(rooms)), "errors": errors[:3],
                "running": sum(c.status is ContainerStatus.running for c in listed), "seconds": round(wall, 2),
                "containers_per_s": round(burst / wall, 1), "by_node": by_node,
            }
        finally:
            rt.close()
            self.clean(scope)

    # ---- one reconcile pass over N services --------------------------------------------------------

    async def reconcile(self) -> None:
        for size in self.args.sizes:
            scope = f"bench-{secrets.token_hex(3)}"
            s = self.settings(scope, agent_memory="8m", agent_cpus=0.01)  # 0.01: the smallest CFS quota (1 ms) runc accepts
            svc, rt = self.service(s)
            try:
                sem = asyncio.Semaphore(16)

                async def one(i: int) -> None:
                    async with sem:
                        await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="b", room_name=f"{scope}-r{i}")

                t0 = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(size)))
                fill = time.perf_counter() - t0
                rec = Reconciler(settings=s, runtime=rt, tenants=FileTenantStore(s.tenants_file), livekit=self.gw, launcher=svc)
                times, calls = [], []
                for _ in range(self.args.passes):
                    rt.calls.clear()
                    t0 = time.perf_counter()
                    report = await rec.run_once(dry_run=True)
                    times.append(time.perf_counter() - t0)
                    calls.append(dict(rt.calls))
                    assert report.containers == size, report.to_dict()
                self.out[f"reconcile_{size}"] = {
                    "pass": summary(times), "engine_calls_per_pass": calls[-1], "fill_s": round(fill, 1),
                    "actions": len(report.results),
                }
            finally:
                rt.close()
                self.clean(scope)

    # ---- node loss --------------------------------------------------------------------------------

    async def node_loss(self, *, leader: bool) -> None:
        """Stop the dockerd of the node that runs an agent (the raft leader or not); time its return."""
        scope = f"bench-{secrets.token_hex(3)}"
        swarm = self.swarm
        with closing(swarm.nodes[0].client()) as c:
            nodes = c.api.nodes()
        leader_name = next(n["Description"]["Hostname"] for n in nodes if n.get("ManagerStatus", {}).get("Leader"))
        victim = swarm.node_named(leader_name) if leader else next(n for n in swarm.nodes if n.name != leader_name)
        k_obs = next(i for i, n in enumerate(swarm.nodes) if n is not victim)
        s = self.settings(scope, k_obs, agent_image=self.args.agent_image, agent_memory="256m", agent_cpus=0.5)
        svc, rt = self.service(s, k_obs)
        room = f"{scope}-loss"
        others = [n for n in swarm.nodes if n is not victim]
        try:
            # Land the agent on the victim: the other nodes drained for the launch, active again before the stop.
            for n in others:
                self._availability(n.name, "drain")
            try:
                out = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="b", room_name=room)
            finally:
                for n in others:
                    self._availability(n.name, "active")
            assert out.container.node == victim.name, out.container
            old = await eventually(lambda: self.agent_sid(room), timeout=60, what="the agent in the room", interval=0.05)
            t0 = time.monotonic()
            stopping = asyncio.create_task(asyncio.to_thread(swarm.stop_node, victim))

            async def moved() -> float | None:
                try:
                    info = await rt.get(out.container.id)
                except Exception:  # no raft leader for a moment
                    return None
                return time.monotonic() - t0 if info and info.status is ContainerStatus.running and info.node != victim.name else None

            async def back() -> float | None:
                sid = await self.agent_sid(room)
                return time.monotonic() - t0 if sid not in (None, old) else None

            task_s = await eventually(moved, timeout=120, what="the task on another node", interval=0.2)
            room_s = await eventually(back, timeout=60, what="the agent back in the room", interval=0.2)
            await stopping
            self.out[f"node_loss_{'leader' if leader else 'non_leader'}"] = {"task_running_s": round(task_s, 1), "agent_back_s": round(room_s, 1)}
        finally:
            rt.close()
            self.clean(scope)
            if not victim.running():
                victim.start()
                swarm.wait_ready(len(swarm.nodes), via=swarm.nodes[k_obs])

    def _availability(self, hostname: str, availability: str) -> None:
        node = next(n for n in self.swarm.nodes if n.running())
        with closing(node.client()) as c:
            info = next(n for n in c.api.nodes() if n["Description"]["Hostname"] == hostname)
            c.api.update_node(info["ID"], info["Version"]["Index"], {**info["Spec"], "Availability": availability})


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    main = docker.from_env()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, SwarmCluster(nodes=3) as swarm:
        t0 = time.monotonic()
        swarm.load_images(main, [TINY_IMAGE, args.agent_image])
        swarm.start_livekit()
        bench = Bench(swarm, Path(tmp), args)
        bench.out["setup_s"] = {"swarm_up_and_images": round(time.monotonic() - started, 1), "images": round(time.monotonic() - t0, 1)}
        try:
            for name in args.sections:
                t = time.monotonic()
                if name == "trigger":
                    await bench.trigger_vs_bare()
                elif name == "reuse":
                    await bench.reuse_and_burst()
                elif name == "reconcile":
                    await bench.reconcile()
                elif name == "loss":
                    await bench.node_loss(leader=False)
                    await bench.node_loss(leader=True)
                bench.out.setdefault("sections_s", {})[name] = round(time.monotonic() - t, 1)
                print(json.dumps({k: v for k, v in bench.out.items() if k != "sections_s"}), flush=True)  # progress
        finally:
            await bench.gw.aclose()
        return bench.out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=8, help="trigger/bare pairs with the agent image (reuse: 5x, throughput: 10x)")
    p.add_argument("--burst", type=int, default=50)
    p.add_argument("--sizes", type=int, nargs="*", default=[100])
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--agent-image", default="agent-orchestrator/agent:latest")
    p.add_argument("--sections", nargs="*", default=["trigger", "reuse", "reconcile", "loss"])
    p.add_argument("--deadline", type=int, default=900, help="hard limit in seconds")
    args = p.parse_args(argv)

    def too_long(*_: object) -> None:
        raise TimeoutError(f"bench.swarm exceeded --deadline {args.deadline}s")

    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(args.deadline)
    out = asyncio.run(main_async(args))
    signal.alarm(0)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "swarm.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
