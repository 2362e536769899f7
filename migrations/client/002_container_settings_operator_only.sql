-- Which container an agent runs in (image, memory, cpus, pids) is the operator's choice, never the
-- tenant's: the chosen image receives credentials, and the limits protect every other tenant on the
-- host. A client's own session (role authenticated) may still write its agents' words; only the
-- service role (the operator) writes the container columns. The orchestrator also clamps them to
-- its ceiling (ORCH_AGENT_*_MAX) and ignores them in a project the client owns outright.
revoke insert, update, truncate, references, trigger on public.agent_configurations from authenticated;
grant insert (agent_id, client_id, instructions, voice, greeting, model, updated_at)
    on public.agent_configurations to authenticated;
grant update (instructions, voice, greeting, model, updated_at) on public.agent_configurations to authenticated;
-- TRUNCATE is not subject to row-level security: no tenant session may empty a shared table.
revoke truncate, references, trigger on public.agents from authenticated;
