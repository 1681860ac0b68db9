-- The payer's running daily total per currency (issue #11): what the daily
-- limit is checked against, instead of summing the day's requests inside the
-- write transaction. It changes in the transaction of every change that
-- moves a request into or out of the counting statuses
-- (store/requests.rs, store/daily_totals.rs), always on the request's own
-- limit_day. Keep the status list below equal to RequestStatus::COUNTING;
-- a test does.
CREATE TABLE daily_totals (
    subscriber_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    -- UTC day (YYYY-MM-DD), as requests.limit_day.
    day TEXT NOT NULL,
    -- Sum of amount_minor of the counting requests of that day.
    total_minor BIGINT NOT NULL,
    PRIMARY KEY (subscriber_id, currency, day)
) WITHOUT ROWID;
INSERT INTO daily_totals (subscriber_id, currency, day, total_minor)
    SELECT subscriber_id, currency, limit_day, SUM(amount_minor)
    FROM requests
    WHERE status IN ('pending_authorization', 'signing', 'signed', 'relayed', 'settled')
    GROUP BY subscriber_id, currency, limit_day;

-- The handset's pending list (subscriber, status, unexpired) from one index
-- range. Its first two columns serve what requests_subscriber_status did;
-- requests_limit served only the daily sum.
CREATE INDEX requests_subscriber_pending ON requests (subscriber_id, status, expires_at);
DROP INDEX requests_subscriber_status;
DROP INDEX requests_limit;
