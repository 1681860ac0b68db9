-- Device signatures already used on state-changing handset calls, kept for
-- the ±300 s window in which they would otherwise be accepted again.
CREATE TABLE device_signatures (
    sig_sha256 TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX device_signatures_expires ON device_signatures (expires_at);
