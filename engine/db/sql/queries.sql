-- Every query the engine runs, by name. Loaded once by engine/db/store.py.

-- Plans here must not depend on the statistics of webhook_queue: when one endpoint holds a huge
-- backlog, ANALYZE says "every row belongs to that endpoint", and a planner trusting it scans
-- the whole queue for everyone else (bench/backlog.py measured 580x slower claims). So every
-- look-up into the queue is a per-endpoint LATERAL ... ORDER BY webhook_id, event_id LIMIT n,
-- which only the (webhook_id, event_id) indexes can serve (the primary key, and
-- webhook_queue_pending_idx for pending rows), and the claim's UPDATE finds its rows by ctid.
-- Statements given (webhook_id, event_id) pairs find each row by its own index probe, in a
-- LATERAL subquery that OFFSET 0 keeps apart, and then change it by ctid: joined to the pairs
-- directly, a queue that statistics call empty was walked end to end once per pair (seen: the
-- daemon's own VACUUM ANALYZE after a drain ran while a million-row insert was uncommitted,
-- leaving 12,888 pages and reltuples = 0, and one flush of delivered events ran for minutes).
-- They say event_id BETWEEN x AND x: an equality would let the planner probe the hash index on
-- event_id alone, which visits every queue row of an event sent to many webhooks; a range only
-- the primary key serves.
-- Webhooks are looked up the same way, one probe per id (a LATERAL subquery with OFFSET 0, or
-- `w.id = ANY (ids)` beside the join): joined directly, a webhooks table that statistics call
-- empty was read whole by every pass, claim and settle (tests/integration/
-- test_plans_without_statistics.py).

-- name: due_webhooks
-- One scheduling pass: move new arrivals into the due set (an active endpoint is due now, or when
-- its backoff ends; arrivals for paused or disabled endpoints are dropped, and resuming one adds
-- an arrival), then return the endpoints due now: up to $1 that just arrived (the rest are
-- read from the due set by the next pass) and up to $1 already waiting, longest waiting first.
-- Every row read here is an endpoint with (possibly) due work: the cost never follows the number
-- of webhooks. Rows whose endpoint was paused or started backing off after it became due come
-- back too, flagged, so the caller can take them out (settle_due).
WITH hint AS (
    -- The due set is a hint: a commit lost in a Postgres crash loses the arrivals' move with
    -- it (the arrivals come back), so this commit need not wait for the disk.
    SELECT set_config('synchronous_commit', 'off', true)
), moved AS (
    DELETE FROM webhook_arrivals AS a
    WHERE a.ctid = ANY (ARRAY(
        SELECT ctid FROM webhook_arrivals LIMIT 100000 FOR UPDATE SKIP LOCKED
    ))
    RETURNING a.webhook_id
), arrived AS (
    INSERT INTO webhook_due AS d (webhook_id, due_at)
    SELECT w.id, greatest(now(), coalesce(w.next_retry_after, now()))
    FROM (SELECT DISTINCT webhook_id FROM moved) AS m
    CROSS JOIN LATERAL (
        SELECT w.id, w.next_retry_after FROM webhooks AS w
        WHERE w.id = m.webhook_id AND w.status = 'active'
        OFFSET 0
    ) AS w
    ORDER BY w.id
    ON CONFLICT (webhook_id) DO UPDATE
        SET due_at = least(d.due_at, excluded.due_at), version = d.version + 1
    RETURNING d.webhook_id, d.due_at, d.version
), due AS (
    (SELECT webhook_id, version FROM arrived WHERE due_at <= now() LIMIT $1)
    UNION ALL
    (SELECT d.webhook_id, d.version FROM webhook_due AS d
     WHERE d.due_at <= now()
     ORDER BY d.due_at
     LIMIT $1)
)
SELECT DISTINCT ON (w.id)
       due.version AS due_version,
       w.status = 'active' AND (w.next_retry_after IS NULL OR w.next_retry_after <= now())
           AS deliverable,
       w.id, w.name, w.tenant, w.url, w.method, w.auth_type, w.secret, w.basic_username,
       w.basic_password,
       w.headers::text AS headers, w.maximum_events, w.maximum_size, w.consecutive_failures,
       w.retry, w.retry_schedule_s, w.max_consecutive_failures, w.failure_window_max,
       w.failure_window_s, w.profile, w.profile_options::text AS profile_options,
       w.compress_events, w.body_template, w.previous_secrets::text AS previous_secrets
FROM due
CROSS JOIN LATERAL (SELECT * FROM webhooks AS w WHERE w.id = due.webhook_id OFFSET 0) AS w
CROSS JOIN hint
ORDER BY w.id, due.version DESC;

-- name: settle_due
-- After a pass, per endpoint ($1 ids, $2 the due version the pass saw, $3 mode):
--   'next': it had claimable rows left: to the back of the line (round-robin by due_at);
--   'dry':  it ran out of claimable rows: it leaves the due set unless something arrived since
--           (version) or some of its rows are leased; then it is due when the first lease would
--           expire (a crashed daemon's work), or when its backoff ends if that is later;
--   'hold': it cannot be delivered to now: due when its backoff ends; paused or disabled, it
--           leaves the due set (resuming it adds an arrival).
-- The look-ups into a dry endpoint's rows step only over its leased rows (at most what is in
-- flight), never over its backlog.
WITH s AS (
    -- A hint too (see due_webhooks): its commit need not wait for the disk.
    SELECT set_config('synchronous_commit', 'off', true) AS hint,
           s.webhook_id, s.version, s.mode, w.status, w.next_retry_after,
           CASE WHEN s.mode <> 'dry' THEN NULL
                WHEN EXISTS (
                    SELECT 1 FROM webhook_queue AS q
                    WHERE q.webhook_id = s.webhook_id AND q.failed_at IS NULL
                      AND (q.locked_until IS NULL OR q.locked_until <= now())
                ) THEN now()
                ELSE (SELECT min(q.locked_until) FROM webhook_queue AS q
                      WHERE q.webhook_id = s.webhook_id AND q.failed_at IS NULL)
           END AS next_due
    FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS s(webhook_id, version, mode)
    LEFT JOIN LATERAL (
        SELECT w.status, w.next_retry_after FROM webhooks AS w
        WHERE w.id = s.webhook_id
        OFFSET 0
    ) AS w ON true
), gone AS (
    DELETE FROM webhook_due AS d
    USING s
    WHERE d.webhook_id = s.webhook_id AND d.version = s.version
      AND (s.status IS DISTINCT FROM 'active' OR (s.mode = 'dry' AND s.next_due IS NULL))
)
UPDATE webhook_due AS d
SET due_at = CASE s.mode
                 WHEN 'next' THEN now()
                 WHEN 'hold' THEN s.next_retry_after
                 ELSE greatest(s.next_due, coalesce(s.next_retry_after, s.next_due))
             END
FROM s
WHERE d.webhook_id = s.webhook_id
  AND s.status = 'active'
  AND CASE s.mode
          WHEN 'next' THEN true
          WHEN 'hold' THEN s.next_retry_after > now()
          ELSE d.version = s.version AND s.next_due IS NOT NULL
      END;

-- name: next_wakeup
-- Seconds until the first entry of the due set is due (negative: already due); NULL when the set
-- is empty. One index probe: an entry may turn out to have nothing left (its rows were delivered
-- while it waited for a lease to expire), which the pass at that time finds and removes.
SELECT extract(epoch FROM min(d.due_at) - now())::float8
FROM webhook_due AS d;

-- name: next_pending_wakeup
-- Like next_wakeup, but only entries whose endpoint still has pending rows count: burst mode's
-- "is anything left?". It steps over entries with nothing left, so it is for that question only.
SELECT extract(epoch FROM d.due_at - now())::float8
FROM webhook_due AS d
WHERE EXISTS (SELECT 1 FROM webhook_queue AS q
              WHERE q.webhook_id = d.webhook_id AND q.failed_at IS NULL)
ORDER BY d.due_at
LIMIT 1;

-- name: claim
-- Lease the head of each given endpoint's queue, in event-id order: at most $2 rows and, beyond
-- the first row, at most about $3 bytes of body (estimated from the stored jsonb, without
-- rendering it; batching.py splits exactly).
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
        CROSS JOIN LATERAL (
            SELECT wh.status, wh.next_retry_after FROM webhooks AS wh
            WHERE wh.id = b.webhook_id
            OFFSET 0
        ) AS wh
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
            SELECT pg_column_size(ev.payload) + octet_length(ev.topic) + $4::int AS bytes
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
-- Attempted and failed: back in the queue, the endpoint's backoff decides when (the arrival puts
-- it in the due set at its next_retry_after).
WITH released AS (
    UPDATE webhook_queue AS q
    SET locked_until = NULL, last_error = t.error
    FROM (
        SELECT x.row_id, d.error
        FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS d(webhook_id, event_id, error)
        CROSS JOIN LATERAL (
            SELECT q2.ctid AS row_id FROM webhook_queue AS q2
            WHERE q2.webhook_id = d.webhook_id AND q2.event_id BETWEEN d.event_id AND d.event_id
            OFFSET 0
        ) AS x
    ) AS t
    WHERE q.ctid = t.row_id
    RETURNING q.webhook_id
)
INSERT INTO webhook_arrivals (webhook_id) SELECT DISTINCT webhook_id FROM released;

-- name: mark_failed
-- Attempted for the last time and failed: kept for listing and replay, never claimed again.
UPDATE webhook_queue AS q
SET locked_until = NULL, failed_at = now(), last_error = t.error
FROM (
    SELECT x.row_id, d.error
    FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS d(webhook_id, event_id, error)
    CROSS JOIN LATERAL (
        SELECT q2.ctid AS row_id FROM webhook_queue AS q2
        WHERE q2.webhook_id = d.webhook_id AND q2.event_id BETWEEN d.event_id AND d.event_id
        OFFSET 0
    ) AS x
) AS t
WHERE q.ctid = t.row_id;

-- name: release_unsent
-- Claimed but never attempted (shutdown): back in the queue, the attempt not counted.
WITH released AS (
    UPDATE webhook_queue AS q
    SET locked_until = NULL, attempts = greatest(q.attempts - 1, 0)
    WHERE q.ctid = ANY (ARRAY(
        SELECT x.row_id
        FROM unnest($1::bigint[], $2::bigint[]) AS d(webhook_id, event_id)
        CROSS JOIN LATERAL (
            SELECT q2.ctid AS row_id FROM webhook_queue AS q2
            WHERE q2.webhook_id = d.webhook_id AND q2.event_id BETWEEN d.event_id AND d.event_id
            OFFSET 0
        ) AS x
    ))
    RETURNING q.webhook_id
)
INSERT INTO webhook_arrivals (webhook_id) SELECT DISTINCT webhook_id FROM released;

-- name: complete_and_log
-- Delivered queue rows ($19 webhook ids, $20 event ids) go, and one log row per request goes in,
-- in one statement: in the common all-delivered flush this is the only round trip.
-- ON CONFLICT makes a retried flush (commit acknowledged too late) harmless. Log columns arrive
-- as arrays ($1-$18), event_ids as text ('{1,2}') since arrays of arrays must be rectangular.
WITH done AS (
    DELETE FROM webhook_queue AS q
    WHERE q.ctid = ANY (ARRAY(
        SELECT x.row_id
        FROM unnest($19::bigint[], $20::bigint[]) AS d(webhook_id, event_id)
        CROSS JOIN LATERAL (
            SELECT q2.ctid AS row_id FROM webhook_queue AS q2
            WHERE q2.webhook_id = d.webhook_id AND q2.event_id BETWEEN d.event_id AND d.event_id
            OFFSET 0
        ) AS x
    ))
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
            $14::bool[], $15::text[], $16::text[], $17::bigint[], $18::bigint[])
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
  AND w.id = ANY ($1::bigint[])  -- an index condition on webhooks whatever the join order
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
WHERE w.id = o.webhook_id
  AND w.id = ANY ($1::bigint[]);  -- an index condition on webhooks whatever the join order

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
    RETURNING q.webhook_id
), woken AS (
    INSERT INTO webhook_arrivals (webhook_id) SELECT DISTINCT webhook_id FROM replayed
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

-- name: churn_tuples
-- Dead and live rows of the tables that churn (every delivered event deletes a queue row, every
-- pass moves arrivals and updates due rows), from the statistics collector (cheap, approximate).
SELECT c.relname AS name, coalesce(s.n_dead_tup, 0) AS dead, coalesce(s.n_live_tup, 0) AS live
FROM pg_class AS c
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = ANY (ARRAY['webhook_queue', 'webhook_due', 'webhook_arrivals']::regclass[]);

-- name: may_vacuum
-- VACUUM by a role without the right only warns and does nothing, so ask first: the owner (or a
-- member of it, or a superuser), or on Postgres 17+ a holder of MAINTAIN. CASE keeps 'MAINTAIN'
-- from being evaluated on servers that do not know it. $1: the table.
SELECT pg_has_role(c.relowner, 'USAGE')
       OR CASE WHEN current_setting('server_version_num')::integer >= 170000
               THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE false END
FROM pg_class AS c
WHERE c.oid = $1::regclass;

-- SKIP_LOCKED: when another daemon is already vacuuming, do nothing rather than wait.
-- name: vacuum_webhook_queue
VACUUM (SKIP_LOCKED, ANALYZE) webhook_queue;

-- name: vacuum_webhook_due
VACUUM (SKIP_LOCKED, ANALYZE) webhook_due;

-- name: vacuum_webhook_arrivals
VACUUM (SKIP_LOCKED, ANALYZE) webhook_arrivals;
