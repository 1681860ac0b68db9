-- Foundation: server keys, certificates, mTLS clients, the audit chain.
-- Times are unix seconds (BIGINT) except audit timestamps, which are the
-- exact RFC 3339 strings that were hashed.

-- SQLite: every write transaction first touches this row, so it takes the
-- write lock up front (no deferred-to-write upgrade deadlocks).
CREATE TABLE write_lock (
    id INTEGER PRIMARY KEY NOT NULL,
    n BIGINT NOT NULL
);
INSERT INTO write_lock (id, n) VALUES (1, 0);

CREATE TABLE server_keys (
    name TEXT PRIMARY KEY NOT NULL,
    key_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    public_spki_hex TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE certificates (
    serial TEXT PRIMARY KEY NOT NULL,
    issuer TEXT NOT NULL,
    purpose TEXT NOT NULL,
    owner TEXT,
    key_id TEXT,
    pem TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    status TEXT NOT NULL,
    revocation_reason TEXT,
    revoked_at BIGINT,
    superseded_by TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX certificates_owner ON certificates (owner);
CREATE INDEX certificates_status ON certificates (status);

CREATE TABLE pki_current (
    name TEXT PRIMARY KEY NOT NULL,
    serial TEXT NOT NULL REFERENCES certificates (serial)
);

CREATE TABLE clients (
    fingerprint TEXT PRIMARY KEY NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    party_id TEXT,
    serial TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY NOT NULL,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_subject ON audit_events (subject);
CREATE INDEX audit_events_action ON audit_events (action);

CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY NOT NULL,
    hash TEXT NOT NULL,
    ts TEXT NOT NULL,
    sig TEXT NOT NULL
);
