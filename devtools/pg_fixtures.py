"""pytest fixtures for the PostgreSQL-backed tenant tests (imported by the modules that use them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.postgres import PostgresCluster
from devtools.supabase_world import World, build_world


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def world(pg_cluster: PostgresCluster) -> World:
    """Fresh databases per test: no test sees another's rows or cache."""
    return build_world(pg_cluster)
