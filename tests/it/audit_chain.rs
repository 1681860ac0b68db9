//! The audit chain on both backends: concurrent writers, tampering caught.

use std::sync::Mutex;

use diesel::RunQueryDsl;
use serde_json::json;
use tmcs::audit::{self, Actor, NewEvent};
use tmcs::hsm::{Custody, EcUsage, GeneratedKey, HsmError, KeyId};
use tmcs::store::DbConn;
use zeroize::Zeroizing;

use crate::on_both_backends;
use crate::support::{Db, Env};

fn raw(app: &tmcs::app::App, sql: &str) {
    app.svc
        .store
        .write(|c: &mut DbConn| -> Result<(), tmcs::store::StoreError> {
            diesel::sql_query(sql).execute(c)?;
            Ok(())
        })
        .unwrap();
}

fn concurrent_writers_build_one_chain(db: Db) {
    let Some(env) = Env::new(db, "concurrent_writers_build_one_chain") else {
        return;
    };
    env.init();
    let app = env.app();
    let key = app.svc.pki.audit_public_key().unwrap();
    let before = audit::verify_store(&app.svc.store, &key, &[])
        .unwrap()
        .events;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = app.svc.store.clone();
            let clock = env.clock.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let ev =
                        test_event("test.concurrent", Some(format!("t{t}")), json!({ "i": i }));
                    store
                        .write(|c| {
                            audit::append(c, tmcs::clock::Clock::now(clock.as_ref()), ev.clone())
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = audit::verify_store(&app.svc.store, &key, &[]).unwrap();
    assert_eq!(report.events, before + 200);
    let cp = audit::make_checkpoint(
        &app.svc.store,
        &app.hsm as &dyn tmcs::hsm::Custody,
        &app.svc.pki.keys.audit,
        env.now(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(cp.seq, before + 200);
    assert!(audit::make_checkpoint(
        &app.svc.store,
        &app.hsm as &dyn tmcs::hsm::Custody,
        &app.svc.pki.keys.audit,
        env.now()
    )
    .unwrap()
    .is_none());
    assert_eq!(
        audit::verify_store(&app.svc.store, &key, &[])
            .unwrap()
            .checkpoints,
        2
    );
}
on_both_backends!(audit_concurrent_writers, concurrent_writers_build_one_chain);

fn tampering_is_caught_and_named(db: Db) {
    let Some(env) = Env::new(db, "tampering_is_caught_and_named") else {
        return;
    };
    env.init();
    let app = env.app();
    let key = app.svc.pki.audit_public_key().unwrap();
    assert!(audit::verify_store(&app.svc.store, &key, &[]).is_ok());

    raw(
        &app,
        "UPDATE audit_events SET action = 'cert.forged' WHERE seq = 7",
    );
    let err = audit::verify_store(&app.svc.store, &key, &[]).unwrap_err();
    assert!(err.to_string().contains("seq 7"), "{err}");
}
on_both_backends!(audit_change_is_named, tampering_is_caught_and_named);

fn deletion_and_reordering_are_caught(db: Db) {
    let Some(env) = Env::new(db, "deletion_and_reordering_are_caught") else {
        return;
    };
    env.init();
    let app = env.app();
    let key = app.svc.pki.audit_public_key().unwrap();
    // Reorder: swap the content of two events, keeping their seq numbers.
    raw(&app, "UPDATE audit_events SET seq = -1 WHERE seq = 4");
    raw(&app, "UPDATE audit_events SET seq = 4 WHERE seq = 5");
    raw(&app, "UPDATE audit_events SET seq = 5 WHERE seq = -1");
    let err = audit::verify_store(&app.svc.store, &key, &[]).unwrap_err();
    assert!(err.to_string().contains("seq 4"), "{err}");
    // Put it back, then delete one.
    raw(&app, "UPDATE audit_events SET seq = -1 WHERE seq = 4");
    raw(&app, "UPDATE audit_events SET seq = 4 WHERE seq = 5");
    raw(&app, "UPDATE audit_events SET seq = 5 WHERE seq = -1");
    assert!(audit::verify_store(&app.svc.store, &key, &[]).is_ok());
    raw(&app, "DELETE FROM audit_events WHERE seq = 9");
    let err = audit::verify_store(&app.svc.store, &key, &[]).unwrap_err();
    assert!(err.to_string().contains("seq 9"), "{err}");
}
on_both_backends!(
    audit_delete_and_reorder_are_named,
    deletion_and_reordering_are_caught
);

fn truncation_behind_a_checkpoint_is_caught(db: Db) {
    let Some(env) = Env::new(db, "truncation_behind_a_checkpoint") else {
        return;
    };
    env.init();
    let app = env.app();
    let key = app.svc.pki.audit_public_key().unwrap();
    let n = audit::verify_store(&app.svc.store, &key, &[])
        .unwrap()
        .events;
    raw(&app, &format!("DELETE FROM audit_events WHERE seq = {n}"));
    let err = audit::verify_store(&app.svc.store, &key, &[]).unwrap_err();
    assert!(err.to_string().contains(&format!("seq {n}")), "{err}");
}
on_both_backends!(
    audit_truncation_is_named,
    truncation_behind_a_checkpoint_is_caught
);

/// An event outside the typed set (the chain itself does not care).
fn test_event(
    action: &'static str,
    subject: Option<String>,
    details: serde_json::Value,
) -> NewEvent {
    NewEvent {
        actor: Actor::System,
        action,
        subject,
        details,
    }
}

#[test]
fn secrets_never_reach_the_chain() {
    let Some(env) = Env::new(Db::Sqlite, "secrets_never_reach_the_chain") else {
        return;
    };
    env.init();
    let app = env.app();
    let ev = test_event("test.secret", None, json!({ "pin_block": "AAAA" }));
    let err = app
        .svc
        .store
        .write(|c| audit::append(c, env.now(), ev))
        .unwrap_err();
    assert!(matches!(err, audit::AuditError::SecretInDetails(_)));
}

/// A log cut after its last stored checkpoint (with that checkpoint removed
/// too) still chains; an auditor's copy of the checkpoint catches it.
fn cut_tail_is_caught_by_a_held_checkpoint(db: Db) {
    let Some(env) = Env::new(db, "cut_tail_held_checkpoint") else {
        return;
    };
    env.init();
    let app = env.app();
    let key = app.svc.pki.audit_public_key().unwrap();
    let first = audit::verify_store(&app.svc.store, &key, &[])
        .unwrap()
        .events;
    for i in 0..5 {
        let ev = test_event("test.tail", None, json!({ "i": i }));
        app.svc
            .store
            .write(|c| audit::append(c, env.now(), ev))
            .unwrap();
    }
    let held = audit::make_checkpoint(
        &app.svc.store,
        &app.hsm as &dyn tmcs::hsm::Custody,
        &app.svc.pki.keys.audit,
        env.now(),
    )
    .unwrap()
    .unwrap();
    raw(
        &app,
        &format!("DELETE FROM audit_events WHERE seq > {first}"),
    );
    raw(
        &app,
        &format!("DELETE FROM audit_checkpoints WHERE seq = {}", held.seq),
    );
    // The cut also took the tree head signed with that checkpoint and the
    // tree nodes over the events cut (else `verify` names those).
    raw(
        &app,
        &format!("DELETE FROM audit_tree_heads WHERE tree_size > {first}"),
    );
    raw(
        &app,
        &format!("DELETE FROM audit_tree_nodes WHERE ((idx + 1) << level) > {first}"),
    );
    assert!(
        audit::verify_store(&app.svc.store, &key, &[]).is_ok(),
        "the database alone cannot see this"
    );
    let err = audit::verify_store(&app.svc.store, &key, std::slice::from_ref(&held)).unwrap_err();
    assert!(
        err.to_string().contains(&format!("seq {}", first + 1)),
        "{err}"
    );
    // A forged held checkpoint is refused, not trusted.
    let forged = audit::Checkpoint {
        seq: 1,
        ..held.clone()
    };
    let err = audit::verify_store(&app.svc.store, &key, &[forged]).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    // The held file formats parse.
    let api_json = serde_json::json!({ "checkpoints": [held.clone()] }).to_string();
    assert_eq!(
        audit::parse_held_checkpoints(&api_json).unwrap(),
        vec![held.clone()]
    );
    let line = serde_json::to_string(&audit::ExportLine::Checkpoint {
        checkpoint: held.clone(),
    })
    .unwrap();
    assert_eq!(audit::parse_held_checkpoints(&line).unwrap(), vec![held]);
}
on_both_backends!(
    audit_cut_tail_with_held_checkpoint,
    cut_tail_is_caught_by_a_held_checkpoint
);

type During<'a> = Box<dyn FnOnce() + Send + 'a>;

/// A custodian that runs `during` once while it signs: what another node
/// (or `tmcs audit checkpoint` beside `tmcs serve`) does between this
/// writer's read of the head and its insert.
struct Interleaved<'a> {
    inner: &'a dyn Custody,
    during: Mutex<Option<During<'a>>>,
}

impl std::fmt::Debug for Interleaved<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interleaved")
    }
}

impl Custody for Interleaved<'_> {
    fn sign_digest(&self, key: &KeyId, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        let sig = self.inner.sign_digest(key, digest);
        if let Some(f) = self.during.lock().unwrap().take() {
            f();
        }
        sig
    }
    fn sign_wrapped(&self, kek: &KeyId, blob: &[u8], d: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        self.inner.sign_wrapped(kek, blob, d)
    }
    fn generate_wrapped_p256(&self, kek: &KeyId) -> Result<(GeneratedKey, Vec<u8>), HsmError> {
        self.inner.generate_wrapped_p256(kek)
    }
    fn rewrap(&self, from: &KeyId, to: &KeyId, blob: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.inner.rewrap(from, to, blob)
    }
    fn hmac_sha256(&self, key: &KeyId, data: &[u8]) -> Result<[u8; 32], HsmError> {
        self.inner.hmac_sha256(key, data)
    }
    fn ecdh_p256(&self, key: &KeyId, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.inner.ecdh_p256(key, peer)
    }
    fn generate_ec_p256(&self, label: &str, usage: EcUsage) -> Result<GeneratedKey, HsmError> {
        self.inner.generate_ec_p256(label, usage)
    }
    fn generate_hmac_key(&self, label: &str) -> Result<KeyId, HsmError> {
        self.inner.generate_hmac_key(label)
    }
    fn public_point(&self, id: &KeyId) -> Result<Vec<u8>, HsmError> {
        self.inner.public_point(id)
    }
    fn key_exists(&self, id: &KeyId) -> Result<bool, HsmError> {
        self.inner.key_exists(id)
    }
    fn destroy_key(&self, id: &KeyId) -> Result<(), HsmError> {
        self.inner.destroy_key(id)
    }
    fn check(&self) -> Result<(), HsmError> {
        self.inner.check()
    }
}

/// Two checkpoint writers on one database (two nodes' timers): while one
/// signs the head it read, the other appends an event and checkpoints the
/// newer head. The slower one then stores nothing, so checkpoints are
/// stored in the order of their `seq` and an auditor who reads
/// `GET /v1/audit/checkpoints?after_seq=<last seen>` misses none.
fn a_checkpoint_of_an_older_head_never_lands_after_a_newer_one(db: Db) {
    let Some(env) = Env::new(db, "checkpoint_of_an_older_head") else {
        return;
    };
    env.init();
    let app = env.app();
    let (store, hsm, key) = (
        &app.svc.store,
        &app.hsm as &dyn Custody,
        &app.svc.pki.keys.audit,
    );
    let ev = test_event("test.checkpoint", None, json!({ "i": 0 }));
    store.write(|c| audit::append(c, env.now(), ev)).unwrap();
    let older = audit_head(&app);
    let other_node: During<'_> = Box::new(|| {
        let ev = test_event("test.checkpoint", None, json!({ "i": 1 }));
        store.write(|c| audit::append(c, env.now(), ev)).unwrap();
        let cp = audit::make_checkpoint(store, hsm, key, env.now()).unwrap();
        assert_eq!(
            cp.map(|c| c.seq),
            Some(older + 1),
            "the other node checkpoints the newer head"
        );
    });
    let slow = Interleaved {
        inner: hsm,
        during: Mutex::new(Some(other_node)),
    };
    let late = audit::make_checkpoint(store, &slow, key, env.now()).unwrap();
    assert!(slow.during.lock().unwrap().is_none(), "the other node ran");
    assert_eq!(
        late,
        None,
        "a checkpoint of seq {older} stored after one of seq {}",
        older + 1
    );
    let all = store
        .read(|c| tmcs::store::audit_rows::checkpoints(c, 0, i64::MAX))
        .unwrap();
    assert_eq!(all.last().map(|c| c.seq), Some(older + 1));
    assert!(all.iter().all(|c| c.seq != older), "{all:?}");
    let report = audit::verify_store(store, &app.svc.pki.audit_public_key().unwrap(), &[]).unwrap();
    assert_eq!(report.events, older + 1);
}
on_both_backends!(
    audit_checkpoints_stored_in_seq_order,
    a_checkpoint_of_an_older_head_never_lands_after_a_newer_one
);

/// The newest event's seq.
fn audit_head(app: &tmcs::app::App) -> i64 {
    app.svc
        .store
        .read(tmcs::store::audit_rows::head)
        .unwrap()
        .map_or(0, |(seq, _)| seq)
}
