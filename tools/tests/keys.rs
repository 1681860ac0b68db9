//! Wrapped subscriber keys as real processes (issue 11): `tmcs serve`
//! restarted, a KEK rotation (`tmcs hsm rewrap`) while payments are signed,
//! and token keys moved to wrapped storage (`tmcs hsm migrate-keys`). The
//! token's contents are read with `pkcs11-tool`, not through tmcs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The token's objects as `pkcs11-tool --list-objects` prints them (user
/// login), from the data dir's own SoftHSM2 configuration and PIN file.
fn token_objects(data: &Path) -> String {
    let pin = std::fs::read_to_string(data.join("hsm.pin")).unwrap();
    let o = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", data.join("softhsm/softhsm2.conf"))
        .args([
            "--module",
            MODULE,
            "--token-label",
            "tmcs",
            "--login",
            "--pin",
            pin.trim(),
            "--list-objects",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "pkcs11-tool: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// How many objects of each kind, and how many are labelled `label`.
fn count(objects: &str, needle: &str) -> usize {
    objects.matches(needle).count()
}

fn hsm_status(t: &Trip, env: &[(String, String)]) -> String {
    let o = run_tmcs(&t.data, env, &["hsm", "status"]);
    assert!(o.status.success(), "hsm status: {}", text(&o));
    text(&o)
}

/// A subscriber key is never a token object: the token holds the same
/// objects before and after subscribers are activated and have signed.
/// After a restart (an empty handle cache, a new login) every payer not
/// seen since signs at once: nothing is looked up per subscriber.
#[actix_web::test]
async fn wrapped_keys_sign_after_a_restart_and_never_become_token_objects() {
    let t = Trip::start("fsp+bank", None).await;
    let before = token_objects(&t.data);
    assert_eq!(
        count(&before, "tmcs:kek-v1"),
        1,
        "init made one KEK: {before}"
    );
    assert_eq!(count(&before, "tmcs:subscriber"), 0, "{before}");
    let hs = t.handsets(1, 5).await;
    let base = t.base();
    let first = t
        .payment(&base)
        .pay(&hs[0], PIN, &terms("WR-0", "EUR1.00"))
        .await
        .unwrap();
    let after = token_objects(&t.data);
    assert_eq!(
        count(&after, "Private Key Object"),
        count(&before, "Private Key Object"),
        "activations added private keys to the token:\nbefore {before}\nafter {after}"
    );
    assert_eq!(count(&after, "tmcs:subscriber"), 0, "{after}");
    assert_eq!(
        before.lines().count(),
        after.lines().count(),
        "the token changed:\nbefore {before}\nafter {after}"
    );
    t.payment(&base)
        .await_status(&first.request_id, &["settled"], Duration::from_secs(20))
        .await
        .unwrap();

    // A new process: a new login, no cached handle.
    t.node.borrow_mut().kill9();
    let mut node = Node::new("node-a2", &t.data, &t.env);
    node.start().await;
    let base = node.base();
    for (i, h) in hs.iter().enumerate() {
        t.pay_and_settle(&base, h, &format!("WR-R{i}")).await;
    }
    assert_eq!(
        token_objects(&t.data).lines().count(),
        after.lines().count()
    );
    let status = hsm_status(&t, &t.env);
    assert!(status.contains("key storage: wrapped"), "{status}");
    assert!(status.contains(": 5 wrapped keys"), "{status}");
    t.audit_verifies();
}

/// `tmcs hsm rewrap` runs as its own process while `tmcs serve` signs
/// payments on PostgreSQL: no payment fails, the node signs with keys under
/// either KEK (it finds the new KEK another process made), and afterwards
/// every key is under version 2; the audit log holds the rotation.
#[actix_web::test]
async fn a_kek_rotation_during_signing_loses_no_request() {
    const TEST: &str = "a_kek_rotation_during_signing_loses_no_request";
    let Some((url, db)) = postgres_url(TEST) else {
        return;
    };
    let t = Trip::start("fsp+bank", Some(&url)).await;
    const HANDSETS: usize = 6;
    const EACH: usize = 10;
    let hs = t.handsets(2, HANDSETS).await;
    let base = t.base();
    let started = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let finished = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let pay = t.payment(&base);
    let loops = hs.iter().enumerate().map(|(i, h)| {
        let (pay, started, finished) = (&pay, started.clone(), finished.clone());
        async move {
            let mut ids = Vec::new();
            for k in 0..EACH {
                started.set(started.get() + 1);
                let paid = pay
                    .pay(h, PIN, &terms(&format!("KR-{i}-{k}"), "EUR1.00"))
                    .await
                    .unwrap_or_else(|e| panic!("payment {i}/{k} during the rotation: {e}"));
                finished.set(finished.get() + 1);
                ids.push(paid.request_id);
            }
            ids
        }
    });
    let (data, env) = (t.data.clone(), t.env.clone());
    let rotation = async {
        while started.get() < HANDSETS * 2 {
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        // Batches of 2: the rotation spans several transactions while
        // payments go on.
        let at_start = finished.get();
        let o = actix_web::rt::task::spawn_blocking(move || {
            run_tmcs(&data, &env, &["hsm", "rewrap", "--batch", "2"])
        })
        .await
        .unwrap();
        (o, at_start, finished.get())
    };
    let (ids, (rewrap, at_start, at_end)) =
        futures_util::future::join(futures_util::future::join_all(loops), rotation).await;
    eprintln!("payments signed when the rotation started: {at_start}, when it ended: {at_end}");
    assert!(
        at_end > at_start && at_start < HANDSETS * EACH,
        "payments must be signed while the rotation runs ({at_start} → {at_end})"
    );
    assert!(rewrap.status.success(), "rewrap: {}", text(&rewrap));
    let out = text(&rewrap);
    assert!(out.contains("created key-encryption key v2"), "{out}");
    assert!(out.contains("every key is under v2"), "{out}");
    // After the rotation: every key signs under v2.
    for (i, h) in hs.iter().enumerate() {
        pay.pay(h, PIN, &terms(&format!("KR-after-{i}"), "EUR1.00"))
            .await
            .unwrap();
    }
    let ids: Vec<String> = ids.into_iter().flatten().collect();
    assert_eq!(ids.len(), HANDSETS * EACH);
    for id in &ids {
        pay.await_status(id, &["settled"], Duration::from_secs(30))
            .await
            .unwrap();
    }
    assert_eq!(
        psql_count(
            &db,
            "SELECT count(*) FROM wrapped_keys WHERE kek_version <> 2"
        ),
        0
    );
    assert_eq!(
        psql_count(
            &db,
            "SELECT count(*) FROM wrapped_keys WHERE kek_version = 2"
        ),
        HANDSETS as i64
    );
    assert_eq!(
        psql_count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'hsm.kek_rotated'"
        ),
        1
    );
    assert!(
        psql_count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'hsm.keys_rewrapped'"
        ) >= 3,
        "batches of 2 over 6 keys"
    );
    // Run again: nothing pending, so a new version (v3) is made and used.
    let again = run_tmcs(&t.data, &t.env, &["hsm", "rewrap"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("every key is under v3"),
        "{}",
        text(&again)
    );
    t.audit_verifies();
}

/// Token keys (`hsm.key_storage = "token"`) keep working after a switch to
/// wrapped, and `tmcs hsm migrate-keys` replaces each by a wrapped key with
/// a renewed certificate: the token objects are gone, and payments sign.
#[actix_web::test]
async fn token_keys_keep_working_and_migrate_to_wrapped_storage() {
    let t = Trip::start_with("fsp+bank", None, &[("TMCS_HSM__KEY_STORAGE", "token")]).await;
    let hs = t.handsets(3, 3).await;
    let base = t.base();
    t.payment(&base)
        .pay(&hs[0], PIN, &terms("MG-0", "EUR1.00"))
        .await
        .unwrap();
    let objects = token_objects(&t.data);
    assert_eq!(
        count(&objects, "tmcs:subscriber"),
        6,
        "3 key pairs: {objects}"
    );
    assert_eq!(count(&objects, "tmcs:kek-v1"), 0, "{objects}");
    t.node.borrow_mut().kill9();

    // The switch: init makes the KEK; the token keys still sign.
    let wrapped: Vec<(String, String)> = t
        .env
        .iter()
        .filter(|(k, _)| k != "TMCS_HSM__KEY_STORAGE")
        .cloned()
        .collect();
    let refused = run_tmcs(&t.data, &wrapped, &["hsm", "status"]);
    assert!(
        !refused.status.success() && text(&refused).contains("run `tmcs init`"),
        "wrapped storage without a KEK must refuse to open: {}",
        text(&refused)
    );
    let o = run_tmcs(&t.data, &wrapped, &["init"]);
    assert!(o.status.success(), "init: {}", text(&o));
    assert!(text(&o).contains("key-encryption key v1"), "{}", text(&o));
    let mut node = Node::new("node-w", &t.data, &wrapped);
    node.start().await;
    let base = node.base();
    t.payment(&base)
        .pay(&hs[1], PIN, &terms("MG-1", "EUR1.00"))
        .await
        .unwrap();
    node.kill9();

    let o = run_tmcs(&t.data, &wrapped, &["hsm", "migrate-keys"]);
    assert!(o.status.success(), "migrate-keys: {}", text(&o));
    assert!(text(&o).contains("3 keys moved"), "{}", text(&o));
    let objects = token_objects(&t.data);
    assert_eq!(count(&objects, "tmcs:subscriber"), 0, "{objects}");
    // Run again: nothing left to move.
    let o = run_tmcs(&t.data, &wrapped, &["hsm", "migrate-keys"]);
    assert!(text(&o).contains("0 keys moved"), "{}", text(&o));

    node.start().await;
    let base = node.base();
    for (i, h) in hs.iter().enumerate() {
        t.pay_and_settle(&base, h, &format!("MG-W{i}")).await;
    }
    let status = hsm_status(&t, &wrapped);
    assert!(status.contains(": 3 wrapped keys"), "{status}");
    t.audit_verifies();
}
