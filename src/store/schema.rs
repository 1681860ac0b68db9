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

diesel::allow_tables_to_appear_in_same_query!(certificates, pki_current, clients);
