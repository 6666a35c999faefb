-- Least-privilege roles: `webhook-engine init-db --create-roles` runs this after schema.sql, in
-- the same transaction. Re-runnable. Roles are cluster-wide and NOLOGIN: grant them to the login
-- roles your applications and daemons use (GRANT webhook_engine_app TO shop_app). The grants
-- below are made in this database, on the schema init-db installed into.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['webhook_engine_app', 'webhook_engine_daemon'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object THEN
                NULL;  -- created meanwhile by a concurrent init-db in another database
            END;
        END IF;
    END LOOP;
END
$$;

DO $$
DECLARE
    here CONSTANT text := current_schema();
    contract CONSTANT text[] := ARRAY['webhooks', 'webhook_events', 'webhook_logs'];
    tbl record;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO webhook_engine_app, webhook_engine_daemon', here);
    -- Start from nothing on every table of ours, so a re-run also takes back what was widened.
    FOR tbl IN
        SELECT c.relname FROM pg_class AS c
        WHERE c.relnamespace = here::regnamespace AND c.relkind IN ('r', 'p')
          AND (c.relname = ANY (contract) OR c.relname LIKE 'webhook\_%')
    LOOP
        EXECUTE format('REVOKE ALL ON %I.%I FROM webhook_engine_app, webhook_engine_daemon',
                       here, tbl.relname);
        IF NOT tbl.relname = ANY (contract) THEN
            -- Internal tables (the queue and whatever the engine keeps beside it): the daemon
            -- claims, completes and replays there.
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.%I TO webhook_engine_daemon',
                           here, tbl.relname);
        END IF;
    END LOOP;

    -- Applications: insert events, nothing else. The fan-out trigger runs as the schema's owner
    -- (SECURITY DEFINER, see schema.sql), so the app needs no right on webhooks or the queue.
    EXECUTE format('GRANT INSERT ON %I.webhook_events TO webhook_engine_app', here);

    -- The daemon: read endpoints and keep their health; read events and prune old ones; write
    -- and prune logs. It never creates, deletes or re-keys webhooks.
    EXECUTE format('GRANT SELECT, UPDATE ON %I.webhooks TO webhook_engine_daemon', here);
    EXECUTE format('GRANT SELECT, DELETE ON %I.webhook_events TO webhook_engine_daemon', here);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON %I.webhook_logs TO webhook_engine_daemon', here);
    IF current_setting('server_version_num')::integer >= 170000 THEN
        -- Postgres 17+: lets the daemon vacuum the queue itself (before, only the owner may).
        EXECUTE format('GRANT MAINTAIN ON %I.webhook_queue TO webhook_engine_daemon', here);
    END IF;
END
$$;
