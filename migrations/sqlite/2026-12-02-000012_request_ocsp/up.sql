-- Evidence of one payment (CONTRACT §13): the OCSP response for the payer's
-- certificate that tmcs produced and signed when it signed the request.
-- Written in the transaction that marks the request signed, so a signed
-- request has its response or was never signed (src/signing/authorize.rs).
-- Requests signed before this migration have no row (their bundles carry
-- "ocsp": null).
CREATE TABLE request_evidence (
    request_id TEXT PRIMARY KEY NOT NULL REFERENCES requests (id),
    -- Base64 of the DER OCSPResponse (status good at that moment).
    ocsp_der_b64 TEXT NOT NULL,
    -- Its producedAt (= thisUpdate), Unix seconds.
    produced_at BIGINT NOT NULL
);
