//! `tmcs init` in-process, on both backends.

use std::os::unix::fs::PermissionsExt;

use tmcs::pki::names;
use tmcs::store::certs;

use crate::on_both_backends;
use crate::support::{openssl, Db, Env};

fn init_creates_everything_once(db: Db) {
    let Some(env) = Env::new(db, "init_creates_everything_once") else {
        return;
    };
    let first = env.init();
    assert!(first
        .created
        .iter()
        .any(|c| c.contains("HSM key pin-pepper")));
    assert!(first
        .created
        .iter()
        .any(|c| c.contains("certificate issuing-ca")));
    let pin_mode = std::fs::metadata(&env.cfg.hsm_pin_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(pin_mode, 0o600);
    let ca_before = std::fs::read(env.ca()).unwrap();

    let second = env.init();
    assert!(
        second.created.is_empty(),
        "second init changed {:?}",
        second.created
    );
    assert_eq!(
        std::fs::read(env.ca()).unwrap(),
        ca_before,
        "ca.pem must stay byte-identical"
    );

    // Every certificate init made verifies against ca.pem.
    let ca = env.ca();
    let ca = ca.to_str().unwrap();
    let mut files = vec![env.cfg.tls_cert.clone()];
    for (name, _) in tmcs::init::BOOTSTRAP_CLIENTS {
        files.push(env.client_files(name).0);
    }
    for f in &files {
        let (ok, out) = openssl(&["verify", "-CAfile", ca, f.to_str().unwrap()]);
        assert!(ok, "{}: {out}", f.display());
    }
    let app = env.app();
    for name in [
        names::TRANSPORT,
        names::DISPLAY,
        names::AUDIT,
        names::OCSP,
        names::ISSUING_CA,
    ] {
        let row = app
            .svc
            .store
            .read(|c| certs::current(c, name))
            .unwrap()
            .unwrap();
        let p = env.path().join(format!("{name}.pem"));
        std::fs::write(&p, &row.pem).unwrap();
        let (ok, out) = openssl(&["verify", "-CAfile", ca, p.to_str().unwrap()]);
        assert!(ok, "{name}: {out}");
    }
    // The server keys are on the token, sensitive and never extractable.
    for k in [
        &app.svc.pki.keys.root_ca,
        &app.svc.pki.keys.issuing_ca,
        &app.svc.pki.keys.transport,
        &app.svc.pki.keys.pin_pepper,
    ] {
        let a = app.hsm.key_attributes(k).unwrap();
        assert!(a.sensitive && a.never_extractable && !a.extractable);
    }
    // The profiles took effect.
    let (_, text) = openssl(&[
        "x509",
        "-in",
        env.cfg.tls_cert.to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(
        text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("TLS Web Server Authentication"));
    let ocsp = app
        .svc
        .store
        .read(|c| certs::current(c, names::OCSP))
        .unwrap()
        .unwrap();
    let p = env.path().join("ocsp-check.pem");
    std::fs::write(&p, &ocsp.pem).unwrap();
    let (_, text) = openssl(&["x509", "-in", p.to_str().unwrap(), "-noout", "-text"]);
    assert!(
        text.contains("OCSP Signing") && text.contains("OCSP No Check"),
        "{text}"
    );
    // And the audit chain with its checkpoint verifies.
    let key = app.svc.pki.audit_public_key().unwrap();
    let report = tmcs::audit::verify_store(&app.svc.store, &key, &[]).unwrap();
    assert!(report.events >= 20 && report.checkpoints == 1, "{report:?}");
}
on_both_backends!(
    init_is_complete_and_idempotent,
    init_creates_everything_once
);

fn init_refuses_a_key_missing_from_the_token(db: Db) {
    let Some(env) = Env::new(db, "init_refuses_a_key_missing_from_the_token") else {
        return;
    };
    env.init();
    let app = env.app();
    app.hsm.destroy_key(&app.svc.pki.keys.display).unwrap();
    drop(app);
    let err = tmcs::init::init(&env.cfg, env.clock.as_ref()).unwrap_err();
    assert!(err.to_string().contains("display"), "{err}");
}
on_both_backends!(
    init_does_not_silently_replace_keys,
    init_refuses_a_key_missing_from_the_token
);

fn lost_client_key_is_reissued_and_the_old_certificate_revoked(db: Db) {
    let Some(env) = Env::new(db, "lost_client_key") else {
        return;
    };
    env.init();
    let (cert, key) = env.client_files("operator");
    let old = tmcs::pki::CertInfo::from_pem(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    std::fs::remove_file(&key).unwrap();
    let report = env.init();
    assert!(
        report.created.iter().any(|c| c.contains("client:operator")),
        "{:?}",
        report.created
    );
    let new = tmcs::pki::CertInfo::from_pem(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    assert_ne!(new.serial_hex, old.serial_hex);
    let app = env.app();
    let old_row = app
        .svc
        .store
        .read(|c| certs::get(c, &old.serial_hex))
        .unwrap()
        .unwrap();
    assert_eq!(old_row.status.as_str(), "revoked");
    assert_eq!(old_row.revocation_reason.as_deref(), Some("superseded"));
}
on_both_backends!(
    lost_client_key_is_reissued,
    lost_client_key_is_reissued_and_the_old_certificate_revoked
);

fn init_renews_certificates_close_to_expiry(db: Db) {
    let Some(env) = Env::new(db, "init_renews_certificates") else {
        return;
    };
    env.init();
    let app = env.app();
    let ocsp_before = app.svc.pki.ocsp.info.serial_hex.clone();
    drop(app);
    // The OCSP responder certificate (365 days) is the first to come due.
    env.clock.advance(time::Duration::days(340));
    let report = env.init();
    assert!(
        report
            .created
            .iter()
            .any(|c| c.contains("certificate ocsp")),
        "{:?}",
        report.created
    );
    assert!(
        !report
            .created
            .iter()
            .any(|c| c.contains("certificate root-ca")),
        "{:?}",
        report.created
    );
    let app = env.app();
    assert_ne!(app.svc.pki.ocsp.info.serial_hex, ocsp_before);
    assert!(app.svc.pki.ocsp.info.not_after - env.now() > time::Duration::days(300));
    // And a run right after changes nothing.
    assert!(env.init().created.is_empty());
}
on_both_backends!(
    init_renews_due_certificates,
    init_renews_certificates_close_to_expiry
);

/// Two nodes migrating one fresh PostgreSQL database at once (each running
/// `tmcs migrate`, or `tmcs init`, as it starts): they take turns, so each
/// migration is applied once and neither fails.
#[test]
fn two_nodes_migrate_one_database_at_once() {
    let Some(url) = crate::support::postgres_or_skip("two_nodes_migrate_one_database_at_once")
    else {
        return;
    };
    let settings = tmcs::store::StoreSettings {
        url,
        pool_size: 2,
        connect_timeout: std::time::Duration::from_secs(10),
        busy_timeout_ms: 10_000,
    };
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            let (settings, barrier) = (settings.clone(), barrier.clone());
            std::thread::spawn(move || {
                let store = tmcs::store::Store::open(&settings).unwrap();
                barrier.wait();
                store.migrate()
            })
        })
        .collect();
    let mut applied: Vec<String> = Vec::new();
    for n in nodes {
        applied.extend(n.join().unwrap().expect("a node's migration failed"));
    }
    let store = tmcs::store::Store::open(&settings).unwrap();
    assert!(!store.has_pending_migrations().unwrap());
    let unique: std::collections::BTreeSet<&String> = applied.iter().collect();
    assert_eq!(unique.len(), applied.len(), "applied twice: {applied:?}");
    assert_eq!(applied.len(), store.applied_migrations().unwrap());
}
