//! No PIN at rest or in replies (CONTRACT §4: no PINs in bodies or logs; §7
//! PIN blocks, the gateway's plain PIN over mTLS, PIN change): after a wrong
//! and a right PIN on the handset, the gateway (including a PIN sent as a
//! JSON number, refused without echoing it) and a PIN change, no audit event
//! and, on SQLite, no byte of the database files holds any of the PINs.

use serde_json::{json, Value};
use tmcs_client::Handset;

use super::{events, problem, stored, Fx, Reply};
use crate::on_both_backends_async;
use crate::support::{post_json, random_msisdn, Db};

/// A random 10-digit PIN (a chance match in the DB is negligible).
fn ten_digit_pin() -> String {
    loop {
        let mut b = [0u8; 10];
        openssl::rand::rand_bytes(&mut b).unwrap();
        let pin: String = b.iter().map(|x| char::from(b'0' + x % 10)).collect();
        if !tmcs::subscriber::pin::is_trivial(&pin) {
            return pin;
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `POST /v1/gateway/authorize` as the demo gateway with `pin` as given.
async fn gateway_authorize(fx: &Fx, msisdn: &str, id: &str, pin: Value) -> Reply {
    post_json(
        &fx.s.as_client("gateway-demo"),
        &fx.s.url("/v1/gateway/authorize"),
        &json!({ "msisdn": msisdn, "request_id": id, "pin": pin }),
    )
    .await
}

/// A gateway sending the PIN as a JSON number: `request.malformed`, the
/// problem body does not echo it, and the request stays pending until the
/// PIN comes as a string.
async fn gateway_pin_as_json_number_is_refused_and_not_echoed(db: Db) {
    let Some(fx) = Fx::start(db, "gateway_pin_as_json_number").await else {
        return;
    };
    let pin = ten_digit_pin();
    let msisdn = random_msisdn();
    fx.s.active_subscriber(&msisdn, &pin).await;
    let id = fx
        .submit_ok(&fx.signed(&msisdn, "small", "EUR20.00", "R-rest-2"))
        .await;
    let as_number: u64 = pin.parse().unwrap();
    let r = gateway_authorize(&fx, &msisdn, &id, json!(as_number)).await;
    problem(&r, 400, "request.malformed");
    assert!(
        !r.2.to_string().contains(&as_number.to_string()),
        "the PIN is echoed: {}",
        r.2
    );
    assert_eq!(stored(&fx.s, &id).status.as_str(), "pending_authorization");
    let (st, _, b) = gateway_authorize(&fx, &msisdn, &id, json!(pin)).await;
    assert_eq!(st, 200, "{b}");
    fx.finish().await;
}
on_both_backends_async!(
    gateway_pin_as_json_number_is_refused_and_not_echoed,
    gateway_pin_as_json_number_is_refused_and_not_echoed
);

/// Every way a PIN reaches tmcs: the handset with a wrong PIN then the
/// right one, the gateway (a JSON number, then the plain PIN over mTLS), a
/// PIN change, then the new PIN. Returns the three request ids.
async fn pin_flows(fx: &Fx, h: &Handset, msisdn: &str, pins: [&str; 3]) -> [String; 3] {
    let [pin, wrong, new_pin] = pins;
    // Handset: a wrong PIN, then the right one.
    let id1 = fx
        .submit_ok(&fx.signed(msisdn, "small", "EUR25.00", "R-rest-1"))
        .await;
    let r = fx.authorize(h, &id1, wrong).await;
    problem(&r, 403, "pin.wrong");
    let (st, _, b) = fx.authorize(h, &id1, pin).await;
    assert_eq!(st, 200, "{b}");
    // Gateway: the plain PIN over mTLS, after one sent as a JSON number
    // (refused, not echoed: CONTRACT §4, no PINs in bodies).
    let id2 = fx
        .submit_ok(&fx.signed(msisdn, "small", "EUR20.00", "R-rest-2"))
        .await;
    let as_number: u64 = pin.parse().unwrap();
    let r = gateway_authorize(fx, msisdn, &id2, json!(as_number)).await;
    problem(&r, 400, "request.malformed");
    assert!(
        !r.2.to_string().contains(&as_number.to_string()),
        "the PIN is echoed: {}",
        r.2
    );
    assert_eq!(stored(&fx.s, &id2).status.as_str(), "pending_authorization");
    let (st, _, b) = gateway_authorize(fx, msisdn, &id2, json!(pin)).await;
    assert_eq!(st, 200, "{b}");
    // A PIN change, then the new PIN.
    let (st, _, b) = fx
        .handset_post(
            h,
            "/v1/handset/pin",
            &h.pin_change_body(pin, new_pin).unwrap(),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let id3 = fx
        .submit_ok(&fx.signed(msisdn, "small", "EUR15.00", "R-rest-3"))
        .await;
    let (st, _, b) = fx.authorize(h, &id3, new_pin).await;
    assert_eq!(st, 200, "{b}");
    [id1, id2, id3]
}

/// The SQLite database file and its WAL, journal and shared memory, as bytes.
fn sqlite_bytes(fx: &Fx) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["tmcs.db", "tmcs.db-wal", "tmcs.db-journal", "tmcs.db-shm"] {
        if let Ok(b) = std::fs::read(fx.env.path().join(name)) {
            bytes.extend_from_slice(&b);
        }
    }
    assert!(std::fs::metadata(fx.env.path().join("tmcs.db")).is_ok_and(|m| m.len() > 0));
    bytes
}

/// After [`pin_flows`], no audit event (details, or anywhere in the row)
/// holds a PIN, nor does any byte of the SQLite database and its WAL (where
/// the request ids are found, as a positive control).
async fn no_pin_in_audit_events_or_database_files(db: Db) {
    let Some(fx) = Fx::start(db, "no_pin_in_audit_or_database").await else {
        return;
    };
    let (pin, wrong, new_pin) = (ten_digit_pin(), ten_digit_pin(), ten_digit_pin());
    let msisdn = random_msisdn();
    let (h, _) = fx.s.active_subscriber(&msisdn, &pin).await;
    let pins = [pin.as_str(), wrong.as_str(), new_pin.as_str()];
    let ids = pin_flows(&fx, &h, &msisdn, pins).await;

    // No audit event holds a PIN (details, or anywhere in the row).
    let all = events(&fx.s, None, None);
    assert!(
        all.iter().any(|e| e.action == "pin.failed"),
        "the flows above must be audited"
    );
    for e in &all {
        let row = format!("{} {} {:?} {}", e.actor, e.action, e.subject, e.details);
        for p in pins {
            assert!(!row.contains(p), "audit event {} holds a PIN: {row}", e.seq);
        }
    }
    // Nor any byte of the SQLite database and its WAL.
    if db == Db::Sqlite {
        let bytes = sqlite_bytes(&fx);
        // The scan sees what the flows wrote (a positive control) …
        for id in &ids {
            assert!(
                contains(&bytes, id.as_bytes()),
                "request {id} not found in the DB bytes"
            );
        }
        // … and no PIN.
        for p in pins {
            assert!(
                !contains(&bytes, p.as_bytes()),
                "a PIN is stored in the database files"
            );
        }
    }
    fx.finish().await;
}
on_both_backends_async!(
    no_pin_in_audit_events_or_database_files,
    no_pin_in_audit_events_or_database_files
);
