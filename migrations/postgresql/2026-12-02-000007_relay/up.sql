-- The relay outbox (CONTRACT §11): one row per delivery to an FSP, a bank
-- or a merchant, written in the same transaction as the status change
-- that causes it. Workers on any node claim due rows with a lease.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    request_id TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('signed', 'instruction', 'outcome', 'reserve', 'release')),
    -- The receiving party (its callback_url is read when sending).
    target TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    content_type TEXT NOT NULL,
    -- Extra headers, JSON [[name, value], …].
    headers TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivering', 'delivered', 'failed')),
    attempts INTEGER NOT NULL,
    -- Unix milliseconds.
    next_attempt_ms BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until_ms BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT,
    UNIQUE (target, event, idempotency_key)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_ms);
CREATE INDEX deliveries_request ON deliveries (request_id);

-- When the request reached settled, rolled_back or failed (the receipt's ts).
ALTER TABLE requests ADD COLUMN final_at BIGINT;
