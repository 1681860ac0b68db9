-- Delegated signing: one row per iMS signing request.

-- A person's iMS party id (e.g. John.Bernard@person.xbank) as an alias of a
-- subscriber, so `from` may name the payer either way.
ALTER TABLE subscribers ADD COLUMN alias TEXT;
CREATE UNIQUE INDEX subscribers_alias ON subscribers (alias);

CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    subscriber_id TEXT NOT NULL,
    fsp_party TEXT NOT NULL,
    merchant_party TEXT NOT NULL,
    -- Replay key: "ref:<to.id>|<ref>" or "m:<hex sha256(M)>"; unique.
    replay_key TEXT NOT NULL UNIQUE,
    -- Hex SHA-256 of C: the same message again is the same request.
    c_sha256 TEXT NOT NULL,
    dtbs_sha256 TEXT NOT NULL,
    nonce TEXT NOT NULL,
    verification_code TEXT NOT NULL,
    tier TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    -- UTC day (YYYY-MM-DD) the request counts against for the daily limit.
    limit_day TEXT NOT NULL,
    ims_xml TEXT NOT NULL,
    signed_xml TEXT,
    signature_b64 TEXT,
    status TEXT NOT NULL,
    error_code TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    signed_at BIGINT
);
CREATE INDEX requests_subscriber_status ON requests (subscriber_id, status);
CREATE INDEX requests_status_expires ON requests (status, expires_at);
CREATE INDEX requests_limit ON requests (subscriber_id, currency, limit_day);
