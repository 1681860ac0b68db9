//! The audit chain on both backends: concurrent writers, tampering caught.

use diesel::RunQueryDsl;
use serde_json::json;
use tmcs::audit::{self, Actor, NewEvent};
use tmcs::store::DbConn;

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
