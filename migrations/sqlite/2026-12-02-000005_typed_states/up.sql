-- States as types (src/states.rs): every state column accepts exactly the
-- values of its enum. Keep these lists equal to the enums; a test does.
-- SQLite cannot add a CHECK to an existing table: each table is rebuilt
-- with it (same columns, same order), its rows copied, its indexes made
-- again. pki_current refers to certificates, so it is rebuilt alongside.

CREATE TABLE certificates_new (
    serial TEXT PRIMARY KEY NOT NULL,
    issuer TEXT NOT NULL,
    purpose TEXT NOT NULL,
    owner TEXT,
    key_id TEXT,
    pem TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked', 'expired')),
    revocation_reason TEXT,
    revoked_at BIGINT,
    superseded_by TEXT,
    created_at BIGINT NOT NULL
);
INSERT INTO certificates_new SELECT * FROM certificates;
CREATE TABLE pki_current_new (
    name TEXT PRIMARY KEY NOT NULL,
    serial TEXT NOT NULL REFERENCES certificates_new (serial)
);
INSERT INTO pki_current_new SELECT * FROM pki_current;
DROP TABLE pki_current;
DROP TABLE certificates;
ALTER TABLE certificates_new RENAME TO certificates;
ALTER TABLE pki_current_new RENAME TO pki_current;
CREATE INDEX certificates_owner ON certificates (owner);
CREATE INDEX certificates_status ON certificates (status);

CREATE TABLE clients_new (
    fingerprint TEXT PRIMARY KEY NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('operator', 'auditor', 'fsp', 'gateway')),
    name TEXT NOT NULL,
    party_id TEXT,
    serial TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked', 'expired')),
    created_at BIGINT NOT NULL
);
INSERT INTO clients_new SELECT * FROM clients;
DROP TABLE clients;
ALTER TABLE clients_new RENAME TO clients;

CREATE TABLE subscribers_new (
    id TEXT PRIMARY KEY NOT NULL,
    msisdn TEXT NOT NULL UNIQUE,
    pseudonym TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    kyc_ref TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending_activation', 'active', 'blocked', 'archived')),
    activation_hash TEXT,
    activation_expires_at BIGINT,
    attempts INTEGER NOT NULL,
    pin_salt TEXT,
    pin_verifier TEXT,
    device_spki TEXT,
    key_id TEXT,
    cert_serial TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    alias TEXT
);
INSERT INTO subscribers_new SELECT * FROM subscribers;
DROP TABLE subscribers;
ALTER TABLE subscribers_new RENAME TO subscribers;
CREATE UNIQUE INDEX subscribers_alias ON subscribers (alias);

CREATE TABLE parties_new (
    party_id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('merchant', 'fsp', 'bank', 'gateway')),
    fingerprint TEXT NOT NULL UNIQUE,
    cert_serial TEXT,
    cert_pem TEXT NOT NULL,
    issued_by_us INTEGER NOT NULL,
    callback_url TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked', 'expired')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO parties_new SELECT * FROM parties;
DROP TABLE parties;
ALTER TABLE parties_new RENAME TO parties;

CREATE TABLE requests_new (
    id TEXT PRIMARY KEY NOT NULL,
    subscriber_id TEXT NOT NULL,
    fsp_party TEXT NOT NULL,
    merchant_party TEXT NOT NULL,
    replay_key TEXT NOT NULL UNIQUE,
    c_sha256 TEXT NOT NULL,
    dtbs_sha256 TEXT NOT NULL,
    nonce TEXT NOT NULL,
    verification_code TEXT NOT NULL,
    tier TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    limit_day TEXT NOT NULL,
    ims_xml TEXT NOT NULL,
    signed_xml TEXT,
    signature_b64 TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending_authorization', 'signing', 'signed', 'relayed', 'settled', 'rolled_back', 'declined', 'expired', 'failed')),
    error_code TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    signed_at BIGINT
);
INSERT INTO requests_new SELECT * FROM requests;
DROP TABLE requests;
ALTER TABLE requests_new RENAME TO requests;
CREATE INDEX requests_subscriber_status ON requests (subscriber_id, status);
CREATE INDEX requests_status_expires ON requests (status, expires_at);
CREATE INDEX requests_limit ON requests (subscriber_id, currency, limit_day);
