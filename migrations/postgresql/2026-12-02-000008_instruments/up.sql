-- Payment instruments (CONTRACT §12, Y.2741 Appendix I): an account a
-- subscriber linked by proving they see a reserved micro-amount at the bank.
-- The amount is kept only as an HMAC made with the HSM pepper key; the
-- account in full only here (the audit trail and the API show it masked).
CREATE TABLE instruments (
    id TEXT PRIMARY KEY NOT NULL,
    subscriber_id TEXT NOT NULL,
    alias TEXT NOT NULL,
    account TEXT NOT NULL,
    account_masked TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('requested', 'verifying', 'active', 'rejected', 'blocked', 'expired', 'disconnected')),
    currency TEXT NOT NULL,
    -- Hex HMAC-SHA256 (HSM pepper key) of the amount, bound to the instrument id.
    amount_hmac TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    -- Until then the amount can be confirmed (relay.instrument_ttl_seconds).
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- An alias names one live instrument of its subscriber.
CREATE UNIQUE INDEX instruments_alias ON instruments (subscriber_id, alias)
    WHERE status IN ('requested', 'verifying', 'active');
CREATE INDEX instruments_subscriber ON instruments (subscriber_id);
CREATE INDEX instruments_due ON instruments (status, expires_at);

-- The instrument an alias payment names (accountPayable = alias:<alias>).
ALTER TABLE requests ADD COLUMN instrument_id TEXT;
