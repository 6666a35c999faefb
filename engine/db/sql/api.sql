-- Every query of the management API (engine/api), by name. Loaded once by engine/db/api_store.py.
--
-- Tenant scope: $1 is always the caller's tenant, NULL for an admin key, and every query that
-- touches a tenant's rows filters on `($1::text IS NULL OR w.tenant = $1)`. Rows come back as
-- JSON text (to_jsonb); the API's response types decide which columns a client sees, so a
-- column missing from them (secret, basic_password, previous_secrets) never leaves the server.

-- name: key_create
INSERT INTO webhook_api_keys (prefix, key_hash, tenant, read_only, name)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- name: key_lookup
SELECT id, key_hash, tenant, read_only
FROM webhook_api_keys
WHERE prefix = $1 AND revoked_at IS NULL;

-- name: key_list
SELECT id, prefix, tenant, read_only, name, created_at, revoked_at
FROM webhook_api_keys
ORDER BY id;

-- name: key_revoke
UPDATE webhook_api_keys SET revoked_at = now()
WHERE id = $1 AND revoked_at IS NULL
RETURNING id;

-- name: ping
SELECT 1;

-- name: list_webhooks
-- $2 tenant filter, $3 status, $4 topic (webhooks that would receive it), $5 substring of name
-- or url (case-insensitive), $6 the last id of the previous page, $7 page size (+1 to see more).
SELECT w.id, to_jsonb(w)::text AS doc
FROM webhooks AS w
WHERE ($1::text IS NULL OR w.tenant = $1)
  AND ($2::text IS NULL OR w.tenant = $2)
  AND ($3::text IS NULL OR w.status = $3)
  AND ($4::text IS NULL OR webhook_engine_topic_matches(w.topics, $4))
  AND ($5::text IS NULL OR strpos(lower(w.name), lower($5)) > 0
                        OR strpos(lower(w.url), lower($5)) > 0)
  AND w.id > $6
ORDER BY w.id
LIMIT $7;

-- name: count_webhooks
SELECT count(*)
FROM webhooks AS w
WHERE ($1::text IS NULL OR w.tenant = $1)
  AND ($2::text IS NULL OR w.status = $2);

-- name: create_webhook
-- $2 tenant, $3 every user-settable column as a JSON object (the API fills the defaults).
INSERT INTO webhooks AS w (tenant, name, url, method, topics, status, auth_type, secret,
                           basic_username, basic_password, headers, maximum_events, maximum_size,
                           profile, profile_options, compress_events, body_template, retry,
                           retry_schedule_s, max_consecutive_failures, failure_window_max,
                           failure_window_s)
SELECT $2::text, p.name, p.url, p.method, p.topics, p.status, p.auth_type, p.secret,
       p.basic_username, p.basic_password, p.headers, p.maximum_events, p.maximum_size,
       p.profile, p.profile_options, p.compress_events, p.body_template, p.retry,
       p.retry_schedule_s, p.max_consecutive_failures, p.failure_window_max, p.failure_window_s
FROM jsonb_populate_record(NULL::webhooks, $3::jsonb) AS p
WHERE $1::text IS NULL OR $1 = $2
RETURNING to_jsonb(w)::text;

-- name: get_webhook
-- The webhook and its health. Queued and given-up events are counted up to 1,000 (a read must
-- not cost in proportion to a backlog: 20,000 queued rows took 2.2 ms to count, and this is the
-- read a dashboard polls); GET .../stats counts them all.
SELECT (to_jsonb(w) || jsonb_build_object(
    'pending', least(pending.n, 1000), 'pending_more', pending.n > 1000,
    'failed', least(failed.n, 1000), 'failed_more', failed.n > 1000,
    'last_success_at', (SELECT l.delivered_at FROM webhook_logs AS l
                        WHERE l.webhook_id = w.id AND l.success
                        ORDER BY l.delivered_at DESC LIMIT 1),
    'last_failure_at', (SELECT l.delivered_at FROM webhook_logs AS l
                        WHERE l.webhook_id = w.id AND NOT l.success
                        ORDER BY l.delivered_at DESC LIMIT 1)
))::text
FROM webhooks AS w
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM webhook_queue AS q
        WHERE q.webhook_id = w.id AND q.failed_at IS NULL
        LIMIT 1001
    ) AS capped
) AS pending
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM webhook_queue AS q
        WHERE q.webhook_id = w.id AND q.failed_at IS NOT NULL
        LIMIT 1001
    ) AS capped
) AS failed
WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1);

-- name: update_webhook
-- $3: the columns to change as a JSON object; columns it does not name keep their value.
UPDATE webhooks AS w
SET (name, url, method, topics, status, auth_type, secret, basic_username, basic_password,
     headers, maximum_events, maximum_size, profile, profile_options, compress_events,
     body_template, retry, retry_schedule_s, max_consecutive_failures, failure_window_max,
     failure_window_s) = (
    SELECT p.name, p.url, p.method, p.topics, p.status, p.auth_type, p.secret, p.basic_username,
           p.basic_password, p.headers, p.maximum_events, p.maximum_size, p.profile,
           p.profile_options, p.compress_events, p.body_template, p.retry, p.retry_schedule_s,
           p.max_consecutive_failures, p.failure_window_max, p.failure_window_s
    FROM jsonb_populate_record(w, $3::jsonb) AS p
)
WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1)
RETURNING to_jsonb(w)::text;

-- name: delete_webhook
-- The webhook_engine_forget trigger deletes its queue rows (pending and failed) with it.
DELETE FROM webhooks AS w
WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1)
RETURNING w.id;

-- name: lock_webhook_auth
SELECT w.auth_type
FROM webhooks AS w
WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1)
FOR UPDATE;

-- name: rotate_secret
-- '' makes the schema's trigger generate a new secret; it also keeps the old one in
-- previous_secrets, so it goes on signing for the configured grace period.
UPDATE webhooks AS w SET secret = coalesce($3::text, '')
WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1)
RETURNING to_jsonb(w)::text;

-- name: reveal_secret
SELECT to_jsonb(w)::text
FROM webhooks AS w
WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1);

-- name: unknown_targets
-- The first event (1-based) whose webhook_id names no webhook of the event's tenant.
SELECT e.n
FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS e(tenant, webhook_id, n)
WHERE e.webhook_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM webhooks AS w WHERE w.id = e.webhook_id AND w.tenant = e.tenant)
ORDER BY e.n
LIMIT 1;

-- name: insert_events
-- One statement for the whole batch, so the fan-out trigger runs once. An idempotency key seen
-- before in the tenant inserts nothing (see find_idempotent).
INSERT INTO webhook_events AS ev (tenant, topic, payload, webhook_id, idempotency_key)
SELECT e.tenant, e.topic, e.payload::jsonb, e.webhook_id, e.idempotency_key
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
     WITH ORDINALITY AS e(tenant, topic, payload, webhook_id, idempotency_key, n)
ORDER BY e.n
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING to_jsonb(ev)::text, ev.idempotency_key;

-- name: find_idempotent
-- Events stored earlier under these keys, and whether this request's event is the same one.
SELECT e.key, to_jsonb(ev)::text AS doc,
       (ev.topic = e.topic AND ev.payload = e.payload::jsonb
        AND ev.webhook_id IS NOT DISTINCT FROM e.webhook_id) AS same
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
     AS e(tenant, key, topic, payload, webhook_id)
JOIN webhook_events AS ev ON ev.tenant = e.tenant AND ev.idempotency_key = e.key;

-- name: get_event
-- The event and, per webhook, where its delivery stands: a queue row is pending or failed
-- (given up); without one, a successful log row naming the event means delivered. Log rows are
-- looked up from the event's creation on (webhook_logs has no index on event_ids).
SELECT (to_jsonb(e) || jsonb_build_object('deliveries', coalesce((
    SELECT jsonb_agg(jsonb_build_object(
               'webhook_id', d.webhook_id, 'status', d.status, 'attempts', d.attempts,
               'last_request_id', d.last_request_id) ORDER BY d.webhook_id)
    FROM (
        SELECT coalesce(q.webhook_id, l.webhook_id) AS webhook_id,
               CASE WHEN q.webhook_id IS NOT NULL AND q.failed_at IS NULL THEN 'pending'
                    WHEN q.webhook_id IS NOT NULL THEN 'failed'
                    WHEN l.delivered THEN 'delivered'
                    ELSE 'failed' END AS status,
               coalesce(l.attempts, 0) AS attempts,
               l.last_request_id
        FROM (SELECT * FROM webhook_queue WHERE event_id = e.id) AS q
        FULL JOIN (
            SELECT lg.webhook_id, count(*) AS attempts, bool_or(lg.success) AS delivered,
                   (array_agg(lg.request_id ORDER BY lg.delivered_at DESC))[1] AS last_request_id
            FROM webhook_logs AS lg
            WHERE lg.delivered_at >= e.created_at AND e.id = ANY (lg.event_ids)
            GROUP BY lg.webhook_id
        ) AS l ON l.webhook_id = q.webhook_id
    ) AS d
), '[]'::jsonb)))::text
FROM webhook_events AS e
WHERE e.id = $2 AND ($1::text IS NULL OR e.tenant = $1);

-- name: send_test
-- One event for this webhook only (webhook_id targeting), through the normal fan-out.
INSERT INTO webhook_events (tenant, topic, payload, webhook_id)
SELECT w.tenant, $3, $4::jsonb, w.id
FROM webhooks AS w
WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1)
RETURNING id;

-- name: log_of_event
SELECT to_jsonb(l)::text
FROM webhook_logs AS l
WHERE l.webhook_id = $1 AND $2::bigint = ANY (l.event_ids)
ORDER BY l.delivered_at DESC
LIMIT 1;

-- name: list_logs
-- Newest first. $3 since, $4 until, $5 success, ($6, $7) the last row of the previous page,
-- $8 page size. NULL when the webhook is not in scope.
SELECT (
    SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.delivered_at DESC, x.request_id DESC),
                    '[]'::jsonb)::text
    FROM (
        SELECT l.request_id, l.delivered_at, l.success, l.status_code, l.duration_ms, l.attempt,
               l.event_ids
        FROM webhook_logs AS l
        WHERE l.webhook_id = w.id
          AND ($3::timestamptz IS NULL OR l.delivered_at >= $3)
          AND ($4::timestamptz IS NULL OR l.delivered_at < $4)
          AND ($5::boolean IS NULL OR l.success = $5)
          AND ($6::timestamptz IS NULL OR (l.delivered_at, l.request_id) < ($6, $7::uuid))
        ORDER BY l.delivered_at DESC, l.request_id DESC
        LIMIT $8
    ) AS x
)
FROM webhooks AS w
WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1);

-- name: get_log
SELECT to_jsonb(l)::text
FROM webhook_logs AS l
JOIN webhooks AS w ON w.id = l.webhook_id
WHERE l.request_id = $3 AND w.id = $2 AND ($1::text IS NULL OR w.tenant = $1);

-- name: webhook_stats
-- Since $3 (NULL: every retained log row): events delivered, failed requests; now: pending and
-- given-up events.
SELECT jsonb_build_object(
    'since', $3::timestamptz,
    'delivered', (SELECT coalesce(sum(cardinality(l.event_ids)), 0) FROM webhook_logs AS l
                  WHERE l.webhook_id = w.id AND l.success
                    AND ($3::timestamptz IS NULL OR l.delivered_at >= $3)),
    'failed_attempts', (SELECT count(*) FROM webhook_logs AS l
                        WHERE l.webhook_id = w.id AND NOT l.success
                          AND ($3::timestamptz IS NULL OR l.delivered_at >= $3)),
    'pending', (SELECT count(*) FROM webhook_queue AS q
                WHERE q.webhook_id = w.id AND q.failed_at IS NULL),
    'given_up', (SELECT count(*) FROM webhook_queue AS q
                 WHERE q.webhook_id = w.id AND q.failed_at IS NOT NULL)
)::text
FROM webhooks AS w
WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1);

-- name: replay_failed
-- Given-up deliveries of one webhook back to pending with fresh attempts (as the CLI's replay).
-- $3: count only. NULL found: the webhook is not in scope.
WITH target AS (
    SELECT w.id FROM webhooks AS w WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1)
), replayed AS (
    UPDATE webhook_queue AS q
    SET failed_at = NULL, attempts = 0, locked_until = NULL, last_error = NULL
    FROM target AS t
    WHERE q.webhook_id = t.id AND q.failed_at IS NOT NULL AND NOT $3::boolean
    RETURNING q.webhook_id
), woken AS (
    -- Into the daemons' due set (schema.sql: webhook_arrivals).
    INSERT INTO webhook_arrivals (webhook_id) SELECT DISTINCT webhook_id FROM replayed
)
SELECT (SELECT id FROM target) AS found,
       CASE WHEN $3::boolean
            THEN (SELECT count(*) FROM webhook_queue AS q, target AS t
                  WHERE q.webhook_id = t.id AND q.failed_at IS NOT NULL)
            ELSE (SELECT count(*) FROM replayed) END AS count;

-- name: replay_events
-- Queue this webhook's tenant's matching events again from webhook_events: created in [$3, $4)
-- and/or with ids in $5. An event already queued for the webhook (pending or failed) is left as
-- it is. $6: count only.
WITH target AS (
    SELECT w.id, w.tenant, w.topics
    FROM webhooks AS w WHERE w.id = $2 AND ($1::text IS NULL OR w.tenant = $1)
), candidates AS (
    SELECT t.id AS webhook_id, e.id AS event_id
    FROM target AS t
    JOIN webhook_events AS e ON e.tenant = t.tenant
    WHERE ($3::timestamptz IS NULL OR e.created_at >= $3)
      AND ($4::timestamptz IS NULL OR e.created_at < $4)
      AND ($5::bigint[] IS NULL OR e.id = ANY ($5::bigint[]))
      AND (e.webhook_id = t.id
           OR (e.webhook_id IS NULL AND webhook_engine_topic_matches(t.topics, e.topic)))
      AND NOT EXISTS (SELECT 1 FROM webhook_queue AS q
                      WHERE q.webhook_id = t.id AND q.event_id = e.id)
), queued AS (
    INSERT INTO webhook_queue (webhook_id, event_id)
    SELECT c.webhook_id, c.event_id FROM candidates AS c WHERE NOT $6::boolean
    ORDER BY c.event_id
    ON CONFLICT DO NOTHING
    RETURNING webhook_id
), woken AS (
    INSERT INTO webhook_arrivals (webhook_id) SELECT DISTINCT webhook_id FROM queued
)
SELECT (SELECT id FROM target) AS found,
       CASE WHEN $6::boolean THEN (SELECT count(*) FROM candidates)
            ELSE (SELECT count(*) FROM queued) END AS count;

-- name: wake
SELECT pg_notify('webhook_engine', '');
