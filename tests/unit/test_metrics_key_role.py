"""A metrics-only key reads /metrics and nothing else; /metrics carries process_*, build_info and the stage histograms."""

from __future__ import annotations

from pathlib import Path

from orchestrator.core.apikeys import entry_yaml, generate
from orchestrator.settings import Settings
from devtools.fakes import fake_app

SCRAPER, ADMIN, CLIENT = generate(), generate(), generate()


def _settings(tmp_path: Path) -> Settings:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n" + entry_yaml(name="prom", key=SCRAPER, client_id=None, metrics_only=True)
                    + entry_yaml(name="ops", key=ADMIN, client_id=None) + entry_yaml(name="c1", key=CLIENT, client_id="c1"))
    return Settings(scope="unit", reconcile_enabled=False, usage_sampling_enabled=False, docker_events_enabled=False,
                    api_keys_file=keys)


async def test_a_metrics_key_scrapes_and_does_nothing_else(tmp_path: Path) -> None:
    async with fake_app(_settings(tmp_path)) as (api, engine):
        bearer = {"Authorization": f"Bearer {SCRAPER}"}
        scraped = await api.get("/metrics", headers=bearer)
        assert scraped.status_code == 200
        text = scraped.text
        for name in ("process_cpu_seconds_total", "orchestrator_build_info{", "orchestrator_start_stage_duration_seconds",
                     "orchestrator_refusals_total", "orchestrator_agent_cpu_seconds"):
            assert name in text, name
        # Everything else refuses it: the admin API, a client's rooms, a trigger.
        assert (await api.get("/api/v1/admin/rooms", headers=bearer)).status_code == 403
        assert (await api.get("/api/v1/rooms", params={"client_id": "c1"}, headers=bearer)).status_code == 403
        trig = await api.post("/api/v1/trigger-agent", headers=bearer, json={"agent_slug": "farah", "mode": "voice",
                                                                              "user_id": "u", "client_id": "c1"})
        assert trig.status_code == 403 and engine.runtime.containers == {}
        assert (await api.get("/api/v1/starts", headers=bearer)).status_code == 403
        # A client key may not scrape (it would read every client's figures); the admin key may.
        assert (await api.get("/metrics", headers={"Authorization": f"Bearer {CLIENT}"})).status_code == 403
        assert (await api.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})).status_code == 200
        refused = engine.metrics.registry.get_sample_value("orchestrator_refusals_total", {"reason": "forbidden", "status": "403"})
        assert refused == 5


async def test_progress_stream_replays_a_recent_start_and_ends_with_it(tmp_path: Path) -> None:
    async with fake_app(_settings(tmp_path)) as (api, engine):
        own = {"Authorization": f"Bearer {CLIENT}"}
        made = await api.post("/api/v1/trigger-agent", headers=own, json={"agent_slug": "farah", "mode": "voice",
                                                                           "room_name": "p1", "user_id": "u", "client_id": "c1"})
        assert made.status_code == 201
        engine.starts.joined(client_id="c1", room="p1", identity="agent-farah")
        resp = await api.get("/api/v1/rooms/p1/progress", headers=own, params={"timeout_s": 5})
        assert resp.status_code == 200
        events = [line.removeprefix("event: ") for line in resp.text.splitlines() if line.startswith("event: ")]
        data = [line for line in resp.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "stage" and '"stage": "agent_joined"' in data[-1] and '"state": "ok"' in data[-1]
        assert "start" in events and "timeout" not in events
        starts = (await api.get("/api/v1/starts", headers=own, params={"room": "p1"})).json()["starts"]
        assert [m["stage"] for m in starts[0]["stages"]][-1] == "agent_joined"
        # Another client's key sees none of it.
        assert (await api.get("/api/v1/starts", headers=own, params={"client_id": "c2"})).status_code == 403
