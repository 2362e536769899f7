-- A client's own LLM API key, sealed like its other secrets (orchestrator/credentials.py) and given
-- only to that client's agents. Null: the operator's fallback key (ORCH_AGENT_LLM_API_KEY), if any.
alter table public.clients add column if not exists llm_api_key text;
alter table public.clients drop constraint if exists clients_llm_api_key_sealed;
alter table public.clients add constraint clients_llm_api_key_sealed check (llm_api_key is null or llm_api_key like 'v_:%');
