-- Certificate lifecycle: subscribers, parties, revocation state and CRLs.

-- One row. revocation_epoch moves in the same transaction as any change to
-- a certificate's revocation state, so every node knows when its cached
-- CRL is stale; crl_number is the last CRL number issued (RFC 5280 §5.2.3).
CREATE TABLE pki_state (
    id INTEGER PRIMARY KEY,
    revocation_epoch BIGINT NOT NULL,
    crl_number BIGINT NOT NULL
);
INSERT INTO pki_state (id, revocation_epoch, crl_number) VALUES (1, 0, 0);

CREATE TABLE crls (
    crl_number BIGINT PRIMARY KEY NOT NULL,
    revocation_epoch BIGINT NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL,
    der_b64 TEXT NOT NULL
);

CREATE TABLE subscribers (
    id TEXT PRIMARY KEY NOT NULL,
    msisdn TEXT NOT NULL UNIQUE,
    pseudonym TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    kyc_ref TEXT NOT NULL,
    state TEXT NOT NULL,
    activation_hash TEXT,
    activation_expires_at BIGINT,
    attempts INTEGER NOT NULL,
    pin_salt TEXT,
    pin_verifier TEXT,
    device_spki TEXT,
    key_id TEXT,
    cert_serial TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE parties (
    party_id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    cert_serial TEXT,
    cert_pem TEXT NOT NULL,
    issued_by_us INTEGER NOT NULL,
    callback_url TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
