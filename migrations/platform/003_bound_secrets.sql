-- Sealed values are now 'v2:<base64>', bound to (client, column, destination URL); 'v1:' values (from
-- before the binding) stay valid until `orchestrator tenants rewrap` re-seals them.
alter table public.clients drop constraint if exists clients_livekit_api_secret_check;
alter table public.clients drop constraint if exists clients_livekit_api_secret_sealed;
alter table public.clients add constraint clients_livekit_api_secret_sealed check (livekit_api_secret ~ '^v[12]:');
alter table public.clients drop constraint if exists clients_supabase_service_key_check;
alter table public.clients drop constraint if exists clients_supabase_service_key_sealed;
alter table public.clients add constraint clients_supabase_service_key_sealed
    check (supabase_service_key is null or supabase_service_key ~ '^v[12]:');
