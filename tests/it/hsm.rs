//! The HSM layer against a real SoftHSM2 token.

use std::sync::Arc;
use std::time::Duration;

use openssl::bn::BigNumContext;
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::sign::Verifier;
use secrecy::SecretString;
use tmcs::hsm::{EcUsage, Hsm, HsmError, HsmMetrics, HsmSettings, KeyId};

use crate::support::{softhsm_conf, unique};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn settings(label: &str, pin: &str, sessions: usize) -> HsmSettings {
    HsmSettings {
        module: MODULE.into(),
        token_label: label.into(),
        pin: SecretString::from(pin.to_string()),
        sessions,
        session_timeout: Duration::from_secs(5),
        softhsm_conf: Some(softhsm_conf()),
    }
}

/// A fresh token and a logged-in handle to it.
fn token(sessions: usize) -> (Hsm, String) {
    let label = unique("h-");
    let conf = softhsm_conf();
    let created = tmcs::hsm::softhsm::ensure_token(
        MODULE,
        Some(&conf),
        &label,
        &SecretString::from("so-pin-1234".to_string()),
        &SecretString::from("user-pin-1234".to_string()),
    )
    .unwrap();
    assert!(created);
    let hsm = Hsm::open(
        &settings(&label, "user-pin-1234", sessions),
        HsmMetrics::new().unwrap(),
    )
    .unwrap();
    (hsm, label)
}

fn verify(spki: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let key = PKey::public_key_from_der(spki).unwrap();
    let mut v = Verifier::new(MessageDigest::sha256(), &key).unwrap();
    v.verify_oneshot(sig, msg).unwrap()
}

#[test]
fn token_creation_is_idempotent() {
    let (_hsm, label) = token(2);
    let again = tmcs::hsm::softhsm::ensure_token(
        MODULE,
        Some(&softhsm_conf()),
        &label,
        &SecretString::from("so-pin-1234".to_string()),
        &SecretString::from("user-pin-1234".to_string()),
    )
    .unwrap();
    assert!(!again, "an existing token must be reused");
}

#[test]
fn generated_keys_are_sensitive_and_never_extractable() {
    let (hsm, _) = token(2);
    let k = hsm.generate_ec_p256("t", EcUsage::Sign).unwrap();
    let a = hsm.key_attributes(&k.id).unwrap();
    assert!(a.token && a.private && a.sensitive && a.always_sensitive && a.never_extractable);
    assert!(!a.extractable);
    let h = hsm.generate_hmac_key("p").unwrap();
    let a = hsm.key_attributes(&h).unwrap();
    assert!(a.sensitive && a.never_extractable && !a.extractable);
    assert_eq!(hsm.public_key_spki(&k.id).unwrap(), k.spki);
}

#[test]
fn ecdsa_signatures_verify_with_openssl() {
    let (hsm, _) = token(2);
    let k = hsm.generate_ec_p256("t", EcUsage::Sign).unwrap();
    let sig = hsm.sign_sha256(&k.id, b"hello").unwrap();
    assert!(verify(&k.spki, b"hello", &sig));
    assert!(!verify(&k.spki, b"hellO", &sig));
    // A derive-only key must not sign.
    let d = hsm.generate_ec_p256("d", EcUsage::Derive).unwrap();
    let err = hsm.sign_sha256(&d.id, b"x").unwrap_err();
    assert!(matches!(err, HsmError::KeyRefused(_)), "{err:?}");
}

#[test]
fn concurrent_signing_from_many_threads() {
    let (hsm, _) = token(4);
    let k = Arc::new(hsm.generate_ec_p256("t", EcUsage::Sign).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let hsm = hsm.clone();
            let k = k.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let msg = format!("thread {t} message {i}");
                    let sig = hsm.sign_sha256(&k.id, msg.as_bytes()).unwrap();
                    assert!(verify(&k.spki, msg.as_bytes(), &sig));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let m = hsm.metrics();
    assert_eq!(
        m.op_seconds
            .with_label_values(&["ecdsa_sign"])
            .get_sample_count(),
        640
    );
    assert!(m.sessions_idle.get() <= 4, "pool exceeded its bound");
    assert_eq!(m.sessions_in_use.get(), 0);
}

#[test]
fn recovers_after_the_login_and_sessions_are_lost() {
    let (hsm, _) = token(3);
    let k = hsm.generate_ec_p256("t", EcUsage::Sign).unwrap();
    assert!(verify(
        &k.spki,
        b"a",
        &hsm.sign_sha256(&k.id, b"a").unwrap()
    ));
    assert_eq!(hsm.metrics().recoveries.get(), 0);
    hsm.simulate_session_loss().unwrap();
    // The pooled sessions are no longer logged in and cached handles are stale.
    let sig = hsm.sign_sha256(&k.id, b"b").unwrap();
    assert!(verify(&k.spki, b"b", &sig));
    assert_eq!(hsm.metrics().recoveries.get(), 1);
    hsm.check().unwrap();
    // Many threads hitting the loss at once recover together.
    hsm.simulate_session_loss().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let hsm = hsm.clone();
            let id = k.id.clone();
            std::thread::spawn(move || hsm.sign_sha256(&id, format!("{i}").as_bytes()).unwrap())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(hsm.metrics().recoveries.get() >= 2);
}

#[test]
fn readiness_check_recovers_a_lost_login() {
    let (hsm, _) = token(2);
    hsm.check().unwrap();
    hsm.simulate_session_loss().unwrap();
    hsm.check().unwrap();
    assert_eq!(hsm.metrics().recoveries.get(), 1);
}

#[test]
fn wrong_pin_and_missing_token_are_mapped() {
    // A token nobody in this process is logged in to (login is per application).
    let label = unique("w-");
    tmcs::hsm::softhsm::ensure_token(
        MODULE,
        Some(&softhsm_conf()),
        &label,
        &SecretString::from("so-pin-1234".to_string()),
        &SecretString::from("user-pin-1234".to_string()),
    )
    .unwrap();
    let err = Hsm::open(
        &settings(&label, "not-the-pin", 1),
        HsmMetrics::new().unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, HsmError::PinIncorrect), "{err:?}");
    assert!(!err.to_string().contains("not-the-pin"));
    let err = Hsm::open(
        &settings("no-such-token", "x", 1),
        HsmMetrics::new().unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, HsmError::TokenNotFound(_)), "{err:?}");
}

#[test]
fn missing_key_is_mapped() {
    let (hsm, _) = token(1);
    let ghost = KeyId::random().unwrap();
    let err = hsm.sign_sha256(&ghost, b"x").unwrap_err();
    assert!(
        matches!(err, HsmError::KeyNotFound(ref id) if *id == ghost.to_hex()),
        "{err:?}"
    );
    assert!(!hsm.key_exists(&ghost).unwrap());
    assert!(matches!(
        hsm.hmac_sha256(&ghost, b"x"),
        Err(HsmError::KeyNotFound(_))
    ));
    assert_eq!(
        hsm.metrics()
            .errors
            .with_label_values(&["ecdsa_sign", "key_not_found"])
            .get(),
        1
    );
}

#[test]
fn ecdh_matches_openssl() {
    let (hsm, _) = token(2);
    let k = hsm.generate_ec_p256("transport", EcUsage::Derive).unwrap();
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let eph = EcKey::generate(&group).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let eph_point = eph
        .public_key()
        .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
        .unwrap();
    let z_hsm = hsm.ecdh_p256(&k.id, &eph_point).unwrap();
    let eph_pkey = PKey::from_ec_key(eph).unwrap();
    let peer = PKey::public_key_from_der(&k.spki).unwrap();
    let mut d = Deriver::new(&eph_pkey).unwrap();
    d.set_peer(&peer).unwrap();
    let z_ossl = d.derive_to_vec().unwrap();
    assert_eq!(z_hsm.as_slice(), z_ossl.as_slice());
    // A point not on the curve is refused as bad input, not a crash.
    let mut bad = eph_point.clone();
    bad[64] ^= 1;
    let r = hsm.ecdh_p256(&k.id, &bad);
    assert!(
        matches!(r, Err(HsmError::BadInput(_))),
        "{:?}",
        r.map(|_| ())
    );
    assert!(matches!(
        hsm.ecdh_p256(&k.id, &bad[..33]),
        Err(HsmError::BadInput(_))
    ));
}

#[test]
fn hmac_is_keyed_and_deterministic() {
    let (hsm, _) = token(2);
    let a = hsm.generate_hmac_key("a").unwrap();
    let b = hsm.generate_hmac_key("b").unwrap();
    let m1 = hsm.hmac_sha256(&a, b"data").unwrap();
    assert_eq!(m1, hsm.hmac_sha256(&a, b"data").unwrap());
    assert_ne!(m1, hsm.hmac_sha256(&a, b"datb").unwrap());
    assert_ne!(m1, hsm.hmac_sha256(&b, b"data").unwrap());
}

#[test]
fn single_session_pool_serves_concurrent_users() {
    let (hsm, _) = token(1);
    let k = hsm.generate_ec_p256("t", EcUsage::Sign).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let hsm = hsm.clone();
            let id = k.id.clone();
            std::thread::spawn(move || hsm.sign_sha256(&id, b"x").is_ok())
        })
        .collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap()));
    assert_eq!(hsm.metrics().pool_timeouts.get(), 0);
}

#[test]
fn exhausted_pool_times_out_instead_of_hanging() {
    let (hsm, label) = token(1);
    let k = hsm.generate_ec_p256("t", EcUsage::Sign).unwrap();
    let mut s = settings(&label, "user-pin-1234", 1);
    s.session_timeout = Duration::from_millis(200);
    let short = Hsm::open(&s, HsmMetrics::new().unwrap()).unwrap();
    let lease = short.hold_session().unwrap();
    let start = std::time::Instant::now();
    let err = short.sign_sha256(&k.id, b"x").unwrap_err();
    assert!(matches!(err, HsmError::PoolTimeout(200)), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(190));
    assert_eq!(short.metrics().pool_timeouts.get(), 1);
    drop(lease);
    assert!(short.sign_sha256(&k.id, b"x").is_ok());
}

/// A fresh token with `keks` trusted KEKs (made in SO sessions before the
/// user logs in, as `tmcs init` does) and a logged-in handle to it.
fn token_with_keks(keks: usize) -> (Hsm, Vec<KeyId>, String) {
    let label = unique("w-");
    let conf = softhsm_conf();
    let so = SecretString::from("so-pin-1234".to_string());
    tmcs::hsm::softhsm::ensure_token(
        MODULE,
        Some(&conf),
        &label,
        &so,
        &SecretString::from("user-pin-1234".to_string()),
    )
    .unwrap();
    let ids = (0..keks)
        .map(|i| {
            tmcs::hsm::create_trusted_kek(MODULE, Some(&conf), &label, &so, &format!("kek-{i}"))
                .unwrap()
        })
        .collect();
    let hsm = Hsm::open(
        &settings(&label, "user-pin-1234", 2),
        HsmMetrics::new().unwrap(),
    )
    .unwrap();
    (hsm, ids, label)
}

#[test]
fn the_kek_is_trusted_sensitive_and_never_extractable() {
    let (hsm, keks, _) = token_with_keks(1);
    assert!(hsm.is_trusted(&keks[0]).unwrap());
    let a = hsm.key_attributes(&keks[0]).unwrap();
    assert!(a.token && a.sensitive && a.never_extractable && !a.extractable);
    // A KEK can only be made by the SO: the user's session cannot set CKA_TRUSTED.
    let err = tmcs::hsm::create_trusted_kek(
        MODULE,
        Some(&softhsm_conf()),
        hsm.token_label(),
        &SecretString::from("so-pin-1234".to_string()),
        "second",
    )
    .unwrap_err();
    assert!(
        format!("{err:?}").contains("Another") || format!("{err}").contains("login"),
        "an SO login while the user is logged in must fail: {err:?}"
    );
}

#[test]
fn a_wrapped_key_signs_and_leaves_nothing_in_the_token() {
    let (hsm, keks, _) = token_with_keks(1);
    let (k, blob) = hsm.generate_wrapped_p256(&keks[0]).unwrap();
    // The blob is the wrapped PKCS#8 key, not the key: no object has its id.
    assert!(!hsm.key_exists(&k.id).unwrap());
    assert!(blob.len() >= 64, "wrapped key of {} bytes", blob.len());
    let msg = b"tmcs wrapped signature";
    let sig = hsm
        .sign_wrapped(&keks[0], &blob, &openssl::sha::sha256(msg))
        .unwrap();
    assert!(verify(&k.spki, msg, &sig));
    // Signing again works: the unwrapped session object was destroyed, not kept.
    let sig2 = hsm
        .sign_wrapped(&keks[0], &blob, &openssl::sha::sha256(msg))
        .unwrap();
    assert!(verify(&k.spki, msg, &sig2));
    // A changed blob does not unwrap (AES key wrap carries an integrity check).
    let mut bad = blob.clone();
    bad[10] ^= 1;
    assert!(hsm
        .sign_wrapped(&keks[0], &bad, &openssl::sha::sha256(msg))
        .is_err());
}

#[test]
fn softhsm_refuses_to_wrap_a_subscriber_key_under_an_untrusted_key_or_export_it() {
    let (hsm, keks, _) = token_with_keks(1);
    let (_, blob) = hsm.generate_wrapped_p256(&keks[0]).unwrap();
    let probe = hsm.export_probe(&keks[0], &blob).unwrap();
    let refused = probe
        .untrusted_wrap
        .expect_err("wrapping under an untrusted key must be refused");
    assert!(
        refused.contains("KeyNotWrappable"),
        "refused for the wrong reason: {refused}"
    );
    assert_eq!(
        probe.clear_value_len, None,
        "the token handed out CKA_VALUE of a subscriber key"
    );
}

#[test]
fn rewrap_moves_a_key_to_another_kek_and_the_old_blob_needs_the_old_kek() {
    let (hsm, keks, _) = token_with_keks(2);
    let (k, old) = hsm.generate_wrapped_p256(&keks[0]).unwrap();
    let new = hsm.rewrap(&keks[0], &keks[1], &old).unwrap();
    assert_ne!(old, new);
    let d = openssl::sha::sha256(b"m");
    assert!(verify(
        &k.spki,
        b"m",
        &hsm.sign_wrapped(&keks[1], &new, &d).unwrap()
    ));
    // Each blob opens only under its own KEK.
    assert!(hsm.sign_wrapped(&keks[0], &new, &d).is_err());
    assert!(hsm.sign_wrapped(&keks[1], &old, &d).is_err());
}
