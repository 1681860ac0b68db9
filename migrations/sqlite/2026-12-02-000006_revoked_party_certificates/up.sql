-- Certificates revoked together with their party. The party row may be
-- replaced when its id is registered again; this keeps the certificate
-- revoked under any id (issue #8, finding 3).
CREATE TABLE revoked_party_certificates (
    fingerprint TEXT PRIMARY KEY NOT NULL,
    party_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    revoked_at BIGINT NOT NULL
);
