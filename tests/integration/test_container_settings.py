"""Who chooses an agent's container: the operator. Real PostgreSQL with the migrations, the real store."""

from __future__ import annotations

import psycopg
import pytest
from pydantic import SecretStr

from orchestrator.core.errors import Conflict
from orchestrator.rules.isolation import AgentNetwork
from orchestrator.core.models import ContainerKey, Mode
from orchestrator.settings import Settings
from orchestrator.tenants.limits import ResourceCeiling
from orchestrator.services.trigger import TriggerService
from devtools.pg_fixtures import pg_cluster, world  # noqa: F401  (fixtures)
from devtools.supabase_world import ACME, AUTONOMITE, BETA, CLARENCE_ID, World, _insert_client, claims
from devtools.fakes import FakeRooms


def _as_client(dsn: str, client_id: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("set role authenticated")
    conn.execute("select set_config('request.jwt.claims', %s, false)", (claims(client_id),))
    return conn


@pytest.mark.parametrize("column,value", [("image", "attacker/miner:latest"), ("memory", "0"), ("cpus", 64), ("pids", 1000000)])
def test_a_tenant_session_cannot_write_container_settings(world: World, column: str, value: object) -> None:
    with _as_client(world.platform.dsn, AUTONOMITE) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"update agent_configurations set {column} = %s where agent_id = %s", (value, CLARENCE_ID))
        agent_id = conn.execute("select id from agents where slug = 'farah'").fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"insert into agent_configurations (agent_id, client_id, {column}) values (%s, %s, %s)", (agent_id, AUTONOMITE, value))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("truncate agent_configurations")  # TRUNCATE ignores row-level security
    with psycopg.connect(world.platform.dsn) as conn:
        assert conn.execute("select image, memory, cpus, pids from agent_configurations where agent_id = %s",
                            (CLARENCE_ID,)).fetchone() == (None, "256m", 0.5, None)


def test_a_tenant_session_still_edits_its_agents_words(world: World) -> None:
    with _as_client(world.platform.dsn, AUTONOMITE) as conn:
        conn.execute("update agent_configurations set instructions = 'Be brief.', voice = 'echo' where agent_id = %s", (CLARENCE_ID,))
        agent_id = conn.execute("select id from agents where slug = 'farah'").fetchone()[0]
        conn.execute("insert into agent_configurations (agent_id, client_id, greeting) values (%s, %s, 'Hi')", (agent_id, AUTONOMITE))
        assert conn.execute("select count(*) from agent_configurations").fetchone() == (3,)  # clarence, litebridge, farah


async def test_store_clamps_resources_to_the_operator_ceiling(world: World) -> None:
    with psycopg.connect(world.platform.dsn, autocommit=True) as conn:  # the operator (service role) wrote these
        conn.execute("update agent_configurations set memory = '64g', cpus = 32, pids = 1000000 where agent_id = %s", (CLARENCE_ID,))
    store = world.store(ceiling=ResourceCeiling.parse(memory="1g", cpus=2.0, pids=512))
    agent = await store.get_agent(await store.get_client(AUTONOMITE), "clarence-coherence")
    assert (agent.resources.memory, agent.resources.cpus, agent.resources.pids) == ("1g", 2.0, 512)
    await store.aclose()


async def test_store_refuses_unlimited_memory(world: World) -> None:
    with psycopg.connect(world.platform.dsn, autocommit=True) as conn:
        conn.execute("update agent_configurations set memory = '0' where agent_id = %s", (CLARENCE_ID,))
    store = world.store()
    with pytest.raises(Conflict, match="memory '0'"):
        await store.get_agent(await store.get_client(AUTONOMITE), "clarence-coherence")
    await store.aclose()


async def test_own_project_cannot_choose_image_or_resources(world: World) -> None:
    # Acme owns its project outright (its service role writes anything), so nothing there picks a container.
    with psycopg.connect(world.acme.dsn, autocommit=True) as conn:
        conn.execute("update agent_configurations set image = 'acme/own:1', memory = '8g', cpus = 4, pids = 4096")
    store = world.store()
    agent = await store.get_agent(await store.get_client(ACME), "farah")
    assert agent.image is None and agent.resources.memory is None and agent.resources.cpus is None and agent.resources.pids is None
    assert agent.instructions == "Acme's receptionist."
    await store.aclose()


NET = AgentNetwork(name="agents")  # the spec only names it


async def test_llm_key_is_per_client_and_sealed(world: World) -> None:
    _insert_client(world.platform.dsn, world.keys, client_id="llmco", name="LLM Co", lk_secret="lk-llmco-secret-123",
                   llm_key="sk-llmco-own-key-456")
    with psycopg.connect(world.platform.dsn) as conn:
        sealed = conn.execute("select llm_api_key from clients where id = 'llmco'").fetchone()[0]
    assert sealed.startswith("v") and "sk-llmco" not in sealed
    store = world.store()
    own, other = await store.get_client("llmco"), await store.get_client(BETA)
    assert own.llm_api_key is not None and own.llm_api_key.get_secret_value() == "sk-llmco-own-key-456"
    assert other.llm_api_key is None
    await store.aclose()

    settings = Settings(agent_llm_api_key=SecretStr("sk-platform-fallback"))
    service = TriggerService(settings=settings, tenants=store, livekit=FakeRooms(), runtime=None)  # type: ignore[arg-type]
    agent = await world.store().get_agent(other, "beta-bot")
    env_own = service.spec_for(ContainerKey(client_id="llmco", agent_slug="beta-bot", room="r"), name="n", client=own, agent=agent, mode=Mode.voice, network=NET).env
    env_other = service.spec_for(ContainerKey(client_id=BETA, agent_slug="beta-bot", room="r"), name="n", client=other, agent=agent, mode=Mode.voice, network=NET).env
    assert env_own["OPENAI_API_KEY"] == "sk-llmco-own-key-456"  # never the platform's key for a client with its own
    assert env_other["OPENAI_API_KEY"] == "sk-platform-fallback"  # the operator's explicit fallback
    no_fallback = TriggerService(settings=Settings(), tenants=store, livekit=FakeRooms(), runtime=None)  # type: ignore[arg-type]
    assert "OPENAI_API_KEY" not in no_fallback.spec_for(
        ContainerKey(client_id=BETA, agent_slug="beta-bot", room="r"), name="n", client=other, agent=agent, mode=Mode.voice, network=NET).env
