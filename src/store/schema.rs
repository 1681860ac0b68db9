//! The one schema shared by both backends (only types the multi-backend
//! connection supports: BigInt, Integer, Text).

diesel::table! {
    write_lock (id) {
        id -> Integer,
        n -> BigInt,
    }
}

diesel::table! {
    server_keys (name) {
        name -> Text,
        key_id -> Text,
        kind -> Text,
        public_spki_hex -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    certificates (serial) {
        serial -> Text,
        issuer -> Text,
        purpose -> Text,
        owner -> Nullable<Text>,
        key_id -> Nullable<Text>,
        pem -> Text,
        fingerprint -> Text,
        not_before -> BigInt,
        not_after -> BigInt,
        status -> Text,
        revocation_reason -> Nullable<Text>,
        revoked_at -> Nullable<BigInt>,
        superseded_by -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    pki_current (name) {
        name -> Text,
        serial -> Text,
    }
}

diesel::table! {
    clients (fingerprint) {
        fingerprint -> Text,
        role -> Text,
        name -> Text,
        party_id -> Nullable<Text>,
        serial -> Nullable<Text>,
        status -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        ts -> Text,
        actor -> Text,
        action -> Text,
        subject -> Nullable<Text>,
        details -> Text,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    audit_checkpoints (seq) {
        seq -> BigInt,
        hash -> Text,
        ts -> Text,
        sig -> Text,
    }
}

diesel::table! {
    audit_tree_nodes (level, idx) {
        level -> Integer,
        idx -> BigInt,
        hash -> Text,
    }
}

diesel::table! {
    audit_tree_heads (tree_size) {
        tree_size -> BigInt,
        root_hash -> Text,
        ts -> Text,
        sig -> Text,
    }
}

diesel::table! {
    keks (version) {
        version -> Integer,
        key_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    wrapped_keys (key_id) {
        key_id -> Text,
        kek_version -> Integer,
        wrapped -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    keks,
    wrapped_keys,
    instruments,
    deliveries,
    requests,
    certificates,
    pki_current,
    clients,
    subscribers,
    parties
);

diesel::table! {
    pki_state (id) {
        id -> Integer,
        revocation_epoch -> BigInt,
        crl_number -> BigInt,
    }
}

diesel::table! {
    crls (crl_number) {
        crl_number -> BigInt,
        revocation_epoch -> BigInt,
        this_update -> BigInt,
        next_update -> BigInt,
        der_b64 -> Text,
    }
}

diesel::table! {
    subscribers (id) {
        id -> Text,
        msisdn -> Text,
        pseudonym -> Text,
        display_name -> Text,
        kyc_ref -> Text,
        state -> Text,
        activation_hash -> Nullable<Text>,
        activation_expires_at -> Nullable<BigInt>,
        attempts -> Integer,
        pin_salt -> Nullable<Text>,
        pin_verifier -> Nullable<Text>,
        device_spki -> Nullable<Text>,
        key_id -> Nullable<Text>,
        cert_serial -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        alias -> Nullable<Text>,
    }
}

diesel::table! {
    parties (party_id) {
        party_id -> Text,
        kind -> Text,
        fingerprint -> Text,
        cert_serial -> Nullable<Text>,
        cert_pem -> Text,
        issued_by_us -> Integer,
        callback_url -> Nullable<Text>,
        status -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    requests (id) {
        id -> Text,
        subscriber_id -> Text,
        fsp_party -> Text,
        merchant_party -> Text,
        replay_key -> Text,
        c_sha256 -> Text,
        dtbs_sha256 -> Text,
        nonce -> Text,
        verification_code -> Text,
        tier -> Text,
        currency -> Text,
        amount_minor -> BigInt,
        limit_day -> Text,
        ims_xml -> Text,
        signed_xml -> Nullable<Text>,
        signature_b64 -> Nullable<Text>,
        status -> Text,
        error_code -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        updated_at -> BigInt,
        signed_at -> Nullable<BigInt>,
        final_at -> Nullable<BigInt>,
        instrument_id -> Nullable<Text>,
    }
}

diesel::table! {
    daily_totals (subscriber_id, currency, day) {
        subscriber_id -> Text,
        currency -> Text,
        day -> Text,
        total_minor -> BigInt,
    }
}

diesel::table! {
    instruments (id) {
        id -> Text,
        subscriber_id -> Text,
        alias -> Text,
        account -> Text,
        account_masked -> Text,
        status -> Text,
        currency -> Text,
        amount_hmac -> Text,
        reservation_id -> Text,
        attempts -> Integer,
        created_at -> BigInt,
        expires_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    device_signatures (sig_sha256) {
        sig_sha256 -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    revoked_party_certificates (fingerprint) {
        fingerprint -> Text,
        party_id -> Text,
        reason -> Text,
        revoked_at -> BigInt,
    }
}

diesel::table! {
    deliveries (id) {
        id -> Text,
        request_id -> Text,
        event -> Text,
        target -> Text,
        idempotency_key -> Text,
        content_type -> Text,
        headers -> Text,
        body -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_ms -> BigInt,
        lease_owner -> Nullable<Text>,
        lease_until_ms -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        delivered_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    request_evidence (request_id) {
        request_id -> Text,
        ocsp_der_b64 -> Text,
        produced_at -> BigInt,
    }
}
