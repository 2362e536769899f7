-- Platform project: the list of tenants ("clients") and where each one's agents and rooms live.
-- Secrets are stored only as ciphertext (orchestrator/credentials.py): a per-client data key wrapped
-- under a master key held outside the database, so a dump of this table reveals no secret.
create table if not exists public.clients (
    id                    text primary key check (length(id) between 1 and 128),
    name                  text not null,
    active                boolean not null default true,
    livekit_url           text not null check (livekit_url ~ '^(wss?|https?)://'),
    livekit_api_key       text not null,
    -- 'v1:<base64>' AES-GCM under the client's data key, bound to (client id, column).
    livekit_api_secret    text not null check (livekit_api_secret like 'v1:%'),
    -- null: the client's agents live in the platform project itself (seed 004: Autonomite).
    supabase_url          text check (supabase_url is null or supabase_url ~ '^https?://'),
    supabase_service_key  text check (supabase_service_key is null or supabase_service_key like 'v1:%'),
    -- 'v1:<master key id>:<base64>': the client's data key wrapped under that master key.
    data_key              text not null check (data_key like 'v1:%:%'),
    updated_at            timestamptz not null default now(),
    -- An own project needs its own key; "use the platform's" needs neither.
    constraint clients_project_key check ((supabase_url is null) = (supabase_service_key is null))
);

-- Only the orchestrator (service_role, which bypasses RLS) reads every row. A client's own
-- dashboard session (role authenticated, JWT claim client_id) sees its own row and no ciphertext.
alter table public.clients enable row level security;
drop policy if exists clients_own_row on public.clients;
create policy clients_own_row on public.clients
    for select to authenticated
    using (id = (auth.jwt() ->> 'client_id'));
revoke all on public.clients from anon, authenticated;
grant select (id, name, active, livekit_url, livekit_api_key, supabase_url, updated_at)
    on public.clients to authenticated;
