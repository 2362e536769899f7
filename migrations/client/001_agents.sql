-- A client's project (its own Supabase, or the platform's when the client shares it): agents and
-- their configurations. Every row carries client_id so one shared project can hold many clients,
-- and row-level security keeps one client's rows from another.
create table if not exists public.agents (
    id          uuid primary key default gen_random_uuid(),
    client_id   text not null check (length(client_id) between 1 and 128),
    -- The orchestrator's slug rule (orchestrator/naming.py SLUG_RULE): `clarence-coherence`,
    -- never `clarence_coherence`; the database refuses the mix-up at write time (seed 004).
    slug        text not null check (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and length(slug) <= 63),
    name        text not null,
    created_at  timestamptz not null default now(),
    unique (client_id, slug),
    unique (id, client_id)
);

-- One configuration per agent (seed 004: it has no slug; it is joined by agent_id).
create table if not exists public.agent_configurations (
    agent_id      uuid primary key,
    client_id     text not null,
    instructions  text not null default '',
    voice         text not null default 'alloy',
    greeting      text not null default '',
    model         text not null default '',
    image         text,
    memory        text check (memory is null or memory ~ '^[0-9]+[bkmg]?$'),
    cpus          numeric check (cpus is null or cpus > 0),
    pids          integer check (pids is null or pids > 0),
    updated_at    timestamptz not null default now(),
    -- The composite key makes a configuration belong to the same client as its agent.
    foreign key (agent_id, client_id) references public.agents (id, client_id) on delete cascade
);

alter table public.agents enable row level security;
alter table public.agent_configurations enable row level security;

drop policy if exists agents_own_client on public.agents;
create policy agents_own_client on public.agents
    for all to authenticated
    using (client_id = (auth.jwt() ->> 'client_id'))
    with check (client_id = (auth.jwt() ->> 'client_id'));

drop policy if exists agent_configurations_own_client on public.agent_configurations;
create policy agent_configurations_own_client on public.agent_configurations
    for all to authenticated
    using (client_id = (auth.jwt() ->> 'client_id'))
    with check (client_id = (auth.jwt() ->> 'client_id'));

revoke all on public.agents, public.agent_configurations from anon;
