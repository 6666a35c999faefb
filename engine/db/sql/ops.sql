-- Read-only queries for operators (metrics, status, tail), by name. Loaded by engine/db/ops.py.
-- None of them may cost more than a few index probes per endpoint or a bounded number of rows:
-- they run while the daemon delivers.

-- name: queue_depth
-- Pending and failed queue rows, each counted exactly up to $1 rows (a bounded scan), with the
-- statistics collector's live-row estimate of the whole table for when a count reaches $1.
SELECT
    (SELECT count(*) FROM (SELECT 1 FROM webhook_queue WHERE failed_at IS NULL LIMIT $1) AS p)
        AS pending,
    -- Served by the partial index webhook_queue_failed_idx.
    (SELECT count(*) FROM (SELECT 1 FROM webhook_queue WHERE failed_at IS NOT NULL LIMIT $1) AS f)
        AS failed,
    (SELECT coalesce(n_live_tup, 0) FROM pg_stat_user_tables
     WHERE relid = 'webhook_queue'::regclass) AS live_estimate;

-- name: oldest_due_age
-- Seconds since the oldest event that is due now was created: pending, not leased, for an
-- endpoint that is active and not backing off; NULL when nothing is due.
-- Cost follows the endpoints with due work, not all webhooks nor every endpoint with queue rows:
-- the candidates are the scheduler's due set (webhook_due, through its due_at index) and the
-- arrivals no daemon has taken in yet (with no daemon running they pile up, and the lag must
-- show it; the first 10,000 are enough to find the oldest, as they lie roughly in insertion order).
-- Each candidate gets one probe for its head. Event ids grow with time, so the smallest head is
-- the oldest event, and only that one event row is read.
WITH candidates AS (
    SELECT d.webhook_id FROM webhook_due AS d WHERE d.due_at <= now()
    UNION
    SELECT a.webhook_id FROM (SELECT webhook_id FROM webhook_arrivals LIMIT 10000) AS a
)
SELECT extract(epoch FROM now() - e.created_at)::float8
FROM webhook_events AS e
WHERE e.id = (
    SELECT min(h.event_id)
    FROM candidates AS d
    JOIN webhooks AS w ON w.id = d.webhook_id
    CROSS JOIN LATERAL (
        SELECT q.event_id FROM webhook_queue AS q
        WHERE q.webhook_id = w.id
          AND q.failed_at IS NULL
          AND (q.locked_until IS NULL OR q.locked_until <= now())
        ORDER BY q.webhook_id, q.event_id
        LIMIT 1
    ) AS h
    WHERE w.status = 'active'
      AND (w.next_retry_after IS NULL OR w.next_retry_after <= now())
);

-- name: endpoint_states
-- Endpoints per effective state (active, backing_off, paused, disabled), per tenant when $1.
SELECT CASE WHEN status = 'active' AND next_retry_after > now() THEN 'backing_off'
            ELSE status END AS state,
       CASE WHEN $1::bool THEN tenant ELSE '' END AS tenant,
       count(*)::bigint AS endpoints
FROM webhooks
GROUP BY 1, 2;

-- name: status
-- The webhook_status view, for some ids ($1, NULL: all) and one tenant ($2, NULL: all).
SELECT * FROM webhook_status
WHERE ($1::bigint[] IS NULL OR id = ANY ($1::bigint[]))
  AND ($2::text IS NULL OR tenant = $2::text)
ORDER BY id;

-- name: existing_webhooks
-- Which of the ids $1 name a webhook (in any tenant).
SELECT id FROM webhooks WHERE id = ANY ($1::bigint[]);

-- name: tail
-- Log rows recorded since the last poll. $1/$2: the newest (delivered_at, request_id) printed; a
-- row is new when it sorts after it. delivered_at is when a request *started*, and a slow
-- request is recorded after faster ones that started later: so rows from $3 (the cursor minus
-- the longest a request takes) are returned too when they completed (delivered_at + duration)
-- at or after $4, the previous poll's time minus a margin; the caller skips what it printed.
-- $5 webhook id, $6 tenant, $7 failures only, $8 row limit. The one-row CTE carries the
-- database's clock (for the next poll's $4) even when nothing is new.
WITH clock AS (SELECT now() AS polled_at)
SELECT clock.polled_at, r.*
FROM clock
LEFT JOIN LATERAL (
    SELECT l.request_id, l.webhook_id, w.name, l.delivered_at, l.duration_ms, l.method, l.url,
           l.status_code, l.success, l.error, cardinality(l.event_ids) AS events, l.attempt
    FROM webhook_logs AS l
    LEFT JOIN webhooks AS w ON w.id = l.webhook_id
    WHERE l.delivered_at >= $3::timestamptz
      AND ((l.delivered_at, l.request_id) > ($1::timestamptz, $2::uuid)
           OR l.delivered_at + make_interval(secs => l.duration_ms / 1000.0) >= $4::timestamptz)
      AND ($5::bigint IS NULL OR l.webhook_id = $5::bigint)
      AND ($6::text IS NULL OR w.tenant = $6::text)
      AND (NOT $7::bool OR NOT l.success)
    ORDER BY l.delivered_at, l.request_id
    LIMIT $8
) AS r ON true;

-- name: database_now
SELECT now();
