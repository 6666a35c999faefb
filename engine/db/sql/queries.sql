-- Every query the engine runs, by name. Loaded once by engine/db/store.py.

-- Plans here must not depend on the statistics of webhook_queue: when one endpoint holds a huge
-- backlog, ANALYZE says "every row belongs to that endpoint", and a planner trusting it scans
-- the whole queue for everyone else (bench/backlog.py measured 580x slower claims). So every
-- look-up into the queue is a per-endpoint LATERAL ... ORDER BY webhook_id, event_id LIMIT n,
-- which only the primary key index can serve, and the claim's UPDATE finds its rows by ctid.

-- name: ready_webhooks
-- Active endpoints, not backing off, with at least one unleased queued event.
SELECT w.id, w.url, w.method, w.auth_type, w.secret, w.basic_username, w.basic_password,
       w.headers::text AS headers, w.maximum_events, w.maximum_size, w.consecutive_failures,
       w.retry, w.retry_schedule_s, w.max_consecutive_failures, w.failure_window_max,
       w.failure_window_s, w.profile, w.profile_options::text AS profile_options,
       w.compress_events, w.body_template, w.previous_secrets::text AS previous_secrets
FROM webhooks AS w
CROSS JOIN LATERAL (
    SELECT 1 FROM webhook_queue AS q
    WHERE q.webhook_id = w.id
      AND q.failed_at IS NULL
      AND (q.locked_until IS NULL OR q.locked_until <= now())
    ORDER BY q.webhook_id, q.event_id
    LIMIT 1
) AS has_work
WHERE w.status = 'active'
  AND (w.next_retry_after IS NULL OR w.next_retry_after <= now());

-- name: next_wakeup
-- Seconds until the earliest backing-off endpoint with queued work may be tried again.
SELECT extract(epoch FROM min(w.next_retry_after) - now())::float8
FROM webhooks AS w
CROSS JOIN LATERAL (
    SELECT 1 FROM webhook_queue AS q
    WHERE q.webhook_id = w.id AND q.failed_at IS NULL
    ORDER BY q.webhook_id, q.event_id
    LIMIT 1
) AS has_work
WHERE w.status = 'active'
  AND w.next_retry_after > now();

-- name: claim
-- Lease the head of each given endpoint's queue, in event-id order: at most $2 rows and, beyond
-- the first row, at most about $3 bytes of body (estimated; batching.py splits exactly).
-- $1 webhook ids, $2 row limits, $3 byte limits, $4 estimated envelope bytes per event,
-- $5 lease seconds. The rows are locked (SKIP LOCKED) inside ARRAY(...), an InitPlan, so the
-- UPDATE is a TID scan of exactly those rows whatever the planner guesses about their number;
-- OFFSET 0 keeps the per-row size look-up a nested loop over the events' primary key.
UPDATE webhook_queue AS q
SET locked_until = now() + make_interval(secs => $5::float8),
    attempts = q.attempts + 1
FROM webhook_events AS e
WHERE q.ctid = ANY (ARRAY(
    SELECT c.row_id
    FROM (
        SELECT h.row_id, b.max_bytes,
               row_number() OVER w AS rn,
               sum(sz.bytes) OVER w AS running
        FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS b(webhook_id, max_rows, max_bytes)
        JOIN webhooks AS wh ON wh.id = b.webhook_id
        CROSS JOIN LATERAL (
            SELECT q2.ctid AS row_id, q2.event_id
            FROM webhook_queue AS q2
            WHERE q2.webhook_id = b.webhook_id
              AND q2.failed_at IS NULL
              AND (q2.locked_until IS NULL OR q2.locked_until <= now())
            ORDER BY q2.webhook_id, q2.event_id
            LIMIT b.max_rows
            FOR UPDATE SKIP LOCKED
        ) AS h
        CROSS JOIN LATERAL (
            SELECT octet_length(ev.payload::text) + octet_length(ev.topic) + $4::int AS bytes
            FROM webhook_events AS ev
            WHERE ev.id = h.event_id
            OFFSET 0
        ) AS sz
        -- Checked again here: the endpoint may have been paused or started backing off since.
        WHERE wh.status = 'active' AND (wh.next_retry_after IS NULL OR wh.next_retry_after <= now())
        WINDOW w AS (PARTITION BY b.webhook_id ORDER BY h.event_id)
    ) AS c
    WHERE c.rn = 1 OR c.running <= c.max_bytes
))
  AND e.id = q.event_id
RETURNING q.webhook_id, q.event_id, q.attempts, e.topic, e.created_at, e.payload::text AS payload;

-- name: release_failed
-- Attempted and failed: back in the queue, the endpoint's backoff decides when.
UPDATE webhook_queue AS q
SET locked_until = NULL, last_error = d.error
FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS d(webhook_id, event_id, error)
WHERE q.webhook_id = d.webhook_id AND q.event_id = d.event_id;

-- name: mark_failed
-- Attempted for the last time and failed: kept for listing and replay, never claimed again.
UPDATE webhook_queue AS q
SET locked_until = NULL, failed_at = now(), last_error = d.error
FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS d(webhook_id, event_id, error)
WHERE q.webhook_id = d.webhook_id AND q.event_id = d.event_id;

-- name: release_unsent
-- Claimed but never attempted (shutdown): back in the queue, the attempt not counted.
UPDATE webhook_queue AS q
SET locked_until = NULL, attempts = greatest(q.attempts - 1, 0)
FROM unnest($1::bigint[], $2::bigint[]) AS d(webhook_id, event_id)
WHERE q.webhook_id = d.webhook_id AND q.event_id = d.event_id;

-- name: complete_and_log
-- Delivered queue rows ($17 webhook ids, $18 event ids) go, and one log row per request goes in,
-- in one statement: in the common all-delivered flush this is the only round trip.
-- ON CONFLICT makes a retried flush (commit acknowledged too late) harmless. Log columns arrive
-- as arrays, event_ids as text ('{1,2}') since arrays of arrays must be rectangular; the body
-- sizes of cut bodies ($19, $20) came later, hence after the queue pairs.
WITH done AS (
    DELETE FROM webhook_queue AS q
    USING unnest($17::bigint[], $18::bigint[]) AS d(webhook_id, event_id)
    WHERE q.webhook_id = d.webhook_id AND q.event_id = d.event_id
)
INSERT INTO webhook_logs (request_id, webhook_id, event_ids, attempt, delivered_at, duration_ms,
                          method, url, request_headers, request_body, status_code,
                          response_headers, response_body, success, error, note,
                          request_body_size, response_body_size)
SELECT r.request_id, r.webhook_id, r.event_ids::bigint[], r.attempt, r.delivered_at,
       r.duration_ms, r.method, r.url, r.request_headers::jsonb, r.request_body, r.status_code,
       r.response_headers::jsonb, r.response_body, r.success, r.error, r.note,
       r.request_body_size, r.response_body_size
FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::int[], $5::timestamptz[], $6::int[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::int[], $12::text[], $13::text[],
            $14::bool[], $15::text[], $16::text[], $19::bigint[], $20::bigint[])
     AS r(request_id, webhook_id, event_ids, attempt, delivered_at, duration_ms, method, url,
          request_headers, request_body, status_code, response_headers, response_body, success,
          error, note, request_body_size, response_body_size)
ON CONFLICT (request_id) DO NOTHING;

-- name: endpoint_outcomes
-- $2 true: a success came after which $3 failures followed; false: $3 more failures in a row.
UPDATE webhooks AS w
SET consecutive_failures = CASE WHEN o.reset THEN o.failures
                                ELSE w.consecutive_failures + o.failures END,
    next_retry_after = CASE WHEN o.reset AND o.failures = 0 THEN NULL
                            ELSE w.next_retry_after END
FROM unnest($1::bigint[], $2::bool[], $3::int[]) AS o(webhook_id, reset, failures)
WHERE w.id = o.webhook_id
  AND (o.failures > 0 OR w.consecutive_failures <> 0 OR w.next_retry_after IS NOT NULL)
RETURNING w.id, w.consecutive_failures, o.failures;

-- name: recent_failures
-- Failed requests per endpoint inside its failure window ($2 seconds).
SELECT o.webhook_id, count(l.request_id)::int AS failures
FROM unnest($1::bigint[], $2::float8[]) AS o(webhook_id, window_s)
LEFT JOIN webhook_logs AS l
  ON l.webhook_id = o.webhook_id
 AND NOT l.success
 AND l.delivered_at > now() - make_interval(secs => o.window_s)
GROUP BY o.webhook_id;

-- name: set_endpoint_state
-- Back off for $2 seconds; with a reason in $3, also disable (an active endpoint).
UPDATE webhooks AS w
SET next_retry_after = now() + make_interval(secs => o.delay_s),
    status = CASE WHEN o.reason IS NOT NULL AND w.status = 'active' THEN 'disabled'
                  ELSE w.status END,
    disabled_at = CASE WHEN o.reason IS NOT NULL AND w.status = 'active' THEN now()
                       ELSE w.disabled_at END,
    disabled_reason = CASE WHEN o.reason IS NOT NULL AND w.status = 'active' THEN o.reason
                           ELSE w.disabled_reason END
FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS o(webhook_id, delay_s, reason)
WHERE w.id = o.webhook_id;

-- name: list_failed
-- Deliveries that used all their attempts ($1: one webhook, or NULL for all).
SELECT q.webhook_id, q.event_id, e.topic, q.attempts, q.failed_at, q.last_error
FROM webhook_queue AS q
JOIN webhook_events AS e ON e.id = q.event_id
WHERE q.failed_at IS NOT NULL AND ($1::bigint IS NULL OR q.webhook_id = $1)
ORDER BY q.webhook_id, q.event_id
LIMIT $2;

-- name: replay_failed
-- Put failed deliveries back in the queue with fresh attempts ($2: only these events, or NULL).
WITH replayed AS (
    UPDATE webhook_queue AS q
    SET failed_at = NULL, attempts = 0, locked_until = NULL, last_error = NULL
    WHERE q.failed_at IS NOT NULL
      AND ($1::bigint IS NULL OR q.webhook_id = $1)
      AND ($2::bigint[] IS NULL OR q.event_id = ANY ($2::bigint[]))
    RETURNING 1
)
SELECT count(*)::int, pg_notify('webhook_engine', '') FROM replayed;

-- name: prune_logs
-- One small batch of log rows older than $1 seconds (at most $2 rows).
DELETE FROM webhook_logs
WHERE request_id IN (
    SELECT request_id FROM webhook_logs
    WHERE delivered_at < now() - make_interval(secs => $1::float8)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
);

-- name: prune_events
-- One small batch of events older than $1 seconds that no webhook still has to deliver (pending
-- or failed queue rows keep their event).
DELETE FROM webhook_events
WHERE id IN (
    SELECT e.id FROM webhook_events AS e
    WHERE e.created_at < now() - make_interval(secs => $1::float8)
      AND NOT EXISTS (SELECT 1 FROM webhook_queue AS q WHERE q.event_id = e.id)
    ORDER BY e.id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
);

-- name: queue_tuples
-- Dead and live rows of the queue, from the statistics collector (cheap, approximate).
SELECT coalesce(n_dead_tup, 0) AS dead, coalesce(n_live_tup, 0) AS live
FROM pg_stat_user_tables
WHERE relid = 'webhook_queue'::regclass;

-- name: vacuum_queue
-- SKIP_LOCKED: when another daemon is already vacuuming, do nothing rather than wait.
VACUUM (SKIP_LOCKED, ANALYZE) webhook_queue;

-- name: webhook_exists
-- For the CLI: a clear "no such webhook" instead of an empty answer.
SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = $1);
