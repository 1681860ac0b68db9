-- Wrapped subscriber keys (hsm.key_storage = "wrapped"): the key-encryption
-- keys by version, and each subscriber private key wrapped
-- (CKM_AES_KEY_WRAP_PAD) under one of them. The blob is useless without the
-- KEK, which never leaves the HSM; deleting the row destroys the key.
CREATE TABLE keks (
    version INTEGER PRIMARY KEY NOT NULL CHECK (version > 0),
    -- CKA_ID of the AES-256 KEK in the token (hex).
    key_id TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE wrapped_keys (
    -- The subscriber key's id (subscribers.key_id, certificates.key_id).
    key_id TEXT PRIMARY KEY NOT NULL,
    kek_version INTEGER NOT NULL REFERENCES keks (version),
    -- Hex of the wrapped PKCS#8 private key.
    wrapped TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- A rotation walks the keys still under an older version, in key order.
CREATE INDEX wrapped_keys_version ON wrapped_keys (kek_version, key_id);

-- The CRL is read in pages of listed certificates in serial order: an
-- index that holds exactly that order, so a page costs its own rows.
CREATE INDEX certificates_listed ON certificates (issuer, status, serial);
