//! Several nodes on one PostgreSQL database (issue 11, item 5): two
//! `tmcs serve` processes on one data dir (one SoftHSM2 token directory)
//! and one database, every call spread over both. Exactly one signature
//! per request, PIN attempts never past `pin.max_attempts`, CRL numbers
//! that only grow, one audit chain that verifies, and the sweep and the
//! checkpoints of both nodes without clashes. (The relay workers of two
//! nodes, killed with `kill -9` while delivering, are in `relay.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use tmcs_client::Handset;
use tmcs_tools::demo::call;
use tmcs_tools::trip::{self, Payment};

const WRONG_PIN: &str = "913572";

/// Node A (the trip's) and node B: the same data dir, token and database;
/// `None` without a PostgreSQL cluster.
async fn two_nodes(test: &str, extra: &[(&str, &str)]) -> Option<(Trip, Node, String)> {
    let (url, db) = postgres_url(test)?;
    let t = Trip::start_with("fsp+bank", Some(&url), extra).await;
    let mut b = Node::new("node-b", &t.data, &t.env);
    b.start().await;
    Some((t, b, db))
}

/// Two nodes and one pending request of a fresh payer (`+49160<prefix>00001`),
/// activated through node `on[0]`, submitted through node `on[1]` and read
/// by the handset through node `on[2]` (0: A, 1: B).
struct Pending {
    t: Trip,
    /// Node B, running until the test ends.
    _node_b: Node,
    bases: [String; 2],
    db: String,
    h: Handset,
    id: String,
    view: Value,
}

async fn pending_request(test: &str, prefix: u32, on: [usize; 3]) -> Option<Pending> {
    let (t, b, db) = two_nodes(test, &[]).await?;
    let bases = [t.base(), b.base()];
    let h = trip::activate_handsets(&bases[on[0]], &t.operator, &t.anon, prefix, 1, PIN)
        .await
        .unwrap()
        .remove(0);
    let reference = format!("NODES-{prefix}");
    let id = t
        .payment(&bases[on[1]])
        .submit(&h, &terms(&reference, "EUR5.00"))
        .await
        .unwrap();
    let view = t.payment(&bases[on[2]]).view(&h, &id).await.unwrap();
    Some(Pending {
        t,
        _node_b: b,
        bases,
        db,
        h,
        id,
        view,
    })
}

/// `(status, code)` of each answer, the problem code or the request's status.
fn outcomes(answers: &[(u16, Value)]) -> BTreeMap<(u16, String), usize> {
    let mut m = BTreeMap::new();
    for (st, v) in answers {
        let code = v["code"].as_str().or(v["status"].as_str()).unwrap_or("?");
        *m.entry((*st, code.to_string())).or_default() += 1;
    }
    m
}

/// `n` authorisations of request `id` (as read in `view`) with `pin`, each a
/// fresh PIN block and device signature, sent at once, alternating between
/// the nodes of `pays`; the answers in the order sent.
async fn authorise_at_once(
    pays: &[Payment<'_>; 2],
    h: &Handset,
    id: &str,
    view: &Value,
    pin: &str,
    n: usize,
) -> Vec<(u16, Value)> {
    let (nonce, dtbs) = (
        view["nonce"].as_str().unwrap(),
        view["dtbs_sha256"].as_str().unwrap(),
    );
    let bodies: Vec<Value> = (0..n)
        .map(|_| json!({ "pin_block": h.auth_pin_block(id, nonce, dtbs, pin).unwrap() }))
        .collect();
    let path = format!("/v1/handset/requests/{id}/authorize");
    let calls = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| pays[i % 2].handset(h, "POST", &path, Some(body)));
    join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// How many audit events `action` the chain holds about `subject`.
fn events(db: &str, action: &str, subject: &str) -> i64 {
    psql_count(
        db,
        &format!(
            "SELECT count(*) FROM audit_events WHERE action = '{action}' AND subject = '{subject}'"
        ),
    )
}

/// The audit subject of the subscriber with `msisdn`.
async fn subscriber_subject(t: &Trip, base: &str, msisdn: &str) -> (String, Value) {
    let (_, v) = call(
        t.operator
            .get(format!("{base}/v1/admin/subscribers/{msisdn}")),
        None,
        "subscriber",
    )
    .await
    .unwrap();
    (
        format!("subscriber:{}", v["subscriber_id"].as_str().unwrap()),
        v,
    )
}

/// 16 authorisations of one request with the right PIN, at once, 8 through
/// each node: exactly one is signed; the other 15 are `409
/// request.not_pending` (CONTRACT §7: a request is signed once). One
/// `request.authorized`, one `request.signed`, one signature stored (the
/// one the winner got), one `signed` delivery, and the money moves once.
#[actix_web::test]
async fn sixteen_authorisations_over_two_nodes_sign_once() {
    const TEST: &str = "sixteen_authorisations_over_two_nodes_sign_once";
    let Some(p) = pending_request(TEST, 1, [1, 0, 1]).await else {
        return;
    };
    let (t, db, h, id, view) = (&p.t, p.db.as_str(), &p.h, p.id.as_str(), &p.view);
    let pays = [t.payment(&p.bases[0]), t.payment(&p.bases[1])];
    let before = t.balances().await;
    let answers = authorise_at_once(&pays, h, id, view, PIN, 16).await;
    let got = outcomes(&answers);
    assert_eq!(
        got,
        BTreeMap::from([
            ((200, "signed".to_string()), 1),
            ((409, "request.not_pending".to_string()), 15),
        ]),
        "{answers:?}"
    );
    let (winner, signed) = answers
        .iter()
        .enumerate()
        .find(|(_, a)| a.0 == 200)
        .unwrap();
    eprintln!("signed through node {}", ["A", "B"][winner % 2]);
    assert_eq!(signed.1["request_id"], id);
    let sig = signed.1["signature"].as_str().unwrap();
    assert_eq!(
        psql_count(
            db,
            &format!("SELECT count(*) FROM requests WHERE id = '{id}' AND signature_b64 = '{sig}'")
        ),
        1,
        "the stored signature is the one handed out"
    );
    let subject = format!("request:{id}");
    assert_eq!(events(db, "request.authorized", &subject), 1);
    assert_eq!(events(db, "request.signed", &subject), 1);
    assert_eq!(
        psql_count(
            db,
            &format!(
                "SELECT count(*) FROM deliveries WHERE request_id = '{id}' AND event = 'signed'"
            )
        ),
        1
    );
    // The PIN was right every time: nothing is left counted.
    let (payer, v) = subscriber_subject(t, &p.bases[0], &h.msisdn).await;
    assert_eq!(v["attempts_left"], 3, "{v}");
    assert_eq!(events(db, "pin.failed", &payer), 0);
    // One payment reaches the FSP, the bank and the payer's account.
    pays[1]
        .await_status(id, &["settled"], Duration::from_secs(60))
        .await
        .unwrap();
    let fsp = t.sims.fsp.get(&t.operator, "/stats").await.unwrap();
    assert_eq!(fsp["signed_verified"], 1, "{fsp}");
    let bank = t.sims.bank.get(&t.operator, "/stats").await.unwrap();
    assert_eq!(bank["settled"], 1, "{bank}");
    let after = t.balances().await;
    assert_eq!(
        trip::balance(&before, trip::PAYER_IBAN, "EUR")
            - trip::balance(&after, trip::PAYER_IBAN, "EUR"),
        500
    );
    t.audit_verifies();
}

/// 12 authorisations with a wrong PIN, at once, 6 through each node, on one
/// subscriber (`pin.max_attempts` = 3): exactly 3 are counted (`pin.wrong`
/// with 2 and 1 attempts left, then `pin.blocked` for the third), the
/// subscriber is blocked, and the other 9 are refused `pin.blocked`
/// without being counted. Then even the right PIN is refused, on either node.
#[actix_web::test]
async fn twelve_wrong_pins_over_two_nodes_count_three() {
    const TEST: &str = "twelve_wrong_pins_over_two_nodes_count_three";
    let Some(p) = pending_request(TEST, 2, [0, 1, 0]).await else {
        return;
    };
    let (t, db, h, id, view) = (&p.t, p.db.as_str(), &p.h, p.id.as_str(), &p.view);
    let pays = [t.payment(&p.bases[0]), t.payment(&p.bases[1])];
    let answers = authorise_at_once(&pays, h, id, view, WRONG_PIN, 12).await;
    assert_eq!(
        outcomes(&answers),
        BTreeMap::from([
            ((403, "pin.blocked".to_string()), 10),
            ((403, "pin.wrong".to_string()), 2),
        ]),
        "{answers:?}"
    );
    let left: BTreeSet<i64> = answers
        .iter()
        .filter(|(_, v)| v["code"] == "pin.wrong")
        .map(|(_, v)| v["attempts_left"].as_i64().unwrap())
        .collect();
    assert_eq!(left, BTreeSet::from([1, 2]), "{answers:?}");
    let (payer, v) = subscriber_subject(t, &p.bases[1], &h.msisdn).await;
    assert_eq!(v["state"], "blocked", "{v}");
    assert_eq!(v["attempts_left"], 0, "{v}");
    assert_eq!(
        psql_count(
            db,
            &format!(
                "SELECT attempts FROM subscribers WHERE msisdn = '{}' AND state = 'blocked'",
                h.msisdn
            )
        ),
        3,
        "the try counter"
    );
    assert_eq!(events(db, "pin.failed", &payer), 3);
    assert_eq!(events(db, "pin.blocked", &payer), 1);
    assert_eq!(events(db, "subscriber.blocked", &payer), 1);
    // Blocked is blocked on both nodes, the right PIN included; nothing more
    // is counted and the request is not signed.
    let again = authorise_at_once(&pays, h, id, view, PIN, 2).await;
    assert_eq!(
        outcomes(&again),
        BTreeMap::from([((403, "pin.blocked".to_string()), 2)]),
        "{again:?}"
    );
    assert_eq!(events(db, "pin.failed", &payer), 3);
    let subject = format!("request:{id}");
    assert_eq!(events(db, "request.authorized", &subject), 0);
    assert_eq!(events(db, "request.signed", &subject), 0);
    t.audit_verifies();
}

/// The CRL number of a DER CRL, after `openssl crl` verified its signature
/// with the CA bundle; and the serials it lists (upper-case hex, no leading
/// zeros).
fn crl_facts(der: &[u8], ca: &Path, dir: &Path) -> (i64, BTreeSet<String>) {
    let file = dir.join(format!("crl-{}.der", hex_of(&openssl::sha::sha256(der))));
    std::fs::write(&file, der).unwrap();
    let o = Command::new("openssl")
        .args([
            "crl",
            "-inform",
            "DER",
            "-noout",
            "-crlnumber",
            "-text",
            "-CAfile",
        ])
        .arg(ca)
        .arg("-in")
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl crl: {}", text(&o));
    assert!(text(&o).contains("verify OK"), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let number = out
        .lines()
        .find_map(|l| l.strip_prefix("crlNumber=0x"))
        .map(|h| i64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no crlNumber: {out}"));
    let serials = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(normal_serial)
        .collect();
    (number, serials)
}

fn normal_serial(s: &str) -> String {
    let s = s.trim().replace(':', "").to_uppercase();
    let t = s.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.into()
    }
}

async fn fetch_crl(t: &Trip, base: &str) -> Vec<u8> {
    let mut res = t.anon.get(format!("{base}/pki/crl")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.body().limit(1 << 20).await.unwrap().to_vec()
}

async fn revoke(t: &Trip, base: &str, serial: &str) {
    call(
        t.operator
            .post(format!("{base}/v1/admin/certificates/{serial}/revoke")),
        Some(&json!({ "reason": "keyCompromise" })),
        "revoke",
    )
    .await
    .unwrap();
}

/// Certificates revoked through both nodes' operator API while both serve
/// `/pki/crl`: one after the other, then all at once. Every CRL verifies;
/// a revocation on one node is on the next CRL of the other, under a larger
/// number; a number never names two different CRLs; the stored numbers run
/// 1, 2, 3, … without a gap and their revocation epochs never go back.
#[actix_web::test]
async fn crl_numbers_grow_across_two_nodes() {
    const TEST: &str = "crl_numbers_grow_across_two_nodes";
    let Some((t, b, db)) = two_nodes(TEST, &[]).await else {
        return;
    };
    let bases = [t.base(), b.base()];
    let ca = t.data.join("ca.pem");
    let dir = t.dir.path();
    let mut handsets = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let prefix = 3 + u32::try_from(i).unwrap();
        handsets.extend(
            trip::activate_handsets(base, &t.operator, &t.anon, prefix, 4, PIN)
                .await
                .unwrap(),
        );
    }
    let mut serials = Vec::new();
    for h in &handsets {
        let (_, v) = subscriber_subject(&t, &bases[0], &h.msisdn).await;
        serials.push(v["certificates"][0]["serial"].as_str().unwrap().to_string());
    }
    let mut seen: Vec<Vec<u8>> = vec![
        fetch_crl(&t, &bases[0]).await,
        fetch_crl(&t, &bases[1]).await,
    ];
    let (mut last, _) = crl_facts(&seen[1], &ca, dir);
    let mut revoked = BTreeSet::new();
    // One after the other: revoke on one node, read the CRL on the other.
    for (i, serial) in serials[..4].iter().enumerate() {
        let (here, there) = (&bases[i % 2], &bases[1 - i % 2]);
        revoke(&t, here, serial).await;
        revoked.insert(normal_serial(serial));
        let other = fetch_crl(&t, there).await;
        let (n, listed) = crl_facts(&other, &ca, dir);
        assert!(n > last, "CRL number {n} after {last}");
        assert_eq!(listed, revoked, "CRL {n} of the other node");
        let own = fetch_crl(&t, here).await;
        assert_eq!(
            own, other,
            "the revoking node serves the CRL the other stored"
        );
        last = n;
        seen.extend([other, own]);
    }
    // All at once: four revocations, two through each node, while eight
    // readers fetch the CRL from both nodes.
    let revocations = serials[4..]
        .iter()
        .enumerate()
        .map(|(i, s)| revoke(&t, &bases[i % 2], s));
    let readers = (0..8).map(|i| {
        let base = &bases[i % 2];
        let t = &t;
        async move {
            let mut got = Vec::new();
            for _ in 0..5 {
                got.push(fetch_crl(t, base).await);
            }
            got
        }
    });
    let ((), fetched) = futures_util::future::join(
        async {
            join_all(revocations).await;
        },
        join_all(readers),
    )
    .await;
    seen.extend(fetched.into_iter().flatten());
    revoked.extend(serials[4..].iter().map(|s| normal_serial(s)));
    let (fa, fb) = (
        fetch_crl(&t, &bases[0]).await,
        fetch_crl(&t, &bases[1]).await,
    );
    assert_eq!(fa, fb, "both nodes serve the newest CRL");
    let (n, listed) = crl_facts(&fa, &ca, dir);
    assert!(n > last, "CRL number {n} after {last}");
    assert_eq!(listed, revoked);
    seen.extend([fa, fb]);
    // A number never names two different CRLs.
    let mut by_number: BTreeMap<i64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for der in seen.into_iter().collect::<BTreeSet<_>>() {
        let (k, _) = crl_facts(&der, &ca, dir);
        by_number.entry(k).or_default().insert(der);
    }
    for (k, ders) in &by_number {
        assert_eq!(ders.len(), 1, "CRL number {k} names {} CRLs", ders.len());
    }
    eprintln!(
        "CRL numbers served: {:?}",
        by_number.keys().collect::<Vec<_>>()
    );
    let stored = psql_count(&db, "SELECT count(*) FROM crls");
    assert_eq!(psql_count(&db, "SELECT min(crl_number) FROM crls"), 1);
    assert_eq!(
        psql_count(&db, "SELECT max(crl_number) FROM crls"),
        stored,
        "numbers without a gap"
    );
    assert_eq!(psql_count(&db, "SELECT crl_number FROM pki_state"), stored);
    assert_eq!(
        psql_count(
            &db,
            "SELECT count(*) FROM crls a JOIN crls b \
             ON a.crl_number < b.crl_number AND a.revocation_epoch > b.revocation_epoch"
        ),
        0,
        "a larger CRL number never has an older revocation state"
    );
    t.audit_verifies();
}

/// Both nodes sweep (every 5 s) and checkpoint (every 2 s here) on one
/// database: requests submitted through both nodes and left alone expire
/// once each (one `request.expired` each), the checkpoints of both nodes'
/// timers are one sequence, and `tmcs audit verify` passes on the chain
/// both nodes wrote, checkpoints included.
#[actix_web::test]
async fn sweeps_and_checkpoints_of_two_nodes_do_not_clash() {
    const TEST: &str = "sweeps_and_checkpoints_of_two_nodes_do_not_clash";
    let Some((t, b, db)) = two_nodes(TEST, &[("TMCS_POLICY__REQUEST_TTL_SECONDS", "3")]).await
    else {
        return;
    };
    let bases = [t.base(), b.base()];
    let pays = [t.payment(&bases[0]), t.payment(&bases[1])];
    let hs = trip::activate_handsets(&bases[1], &t.operator, &t.anon, 5, 2, PIN)
        .await
        .unwrap();
    let checkpoints_before = psql_count(&db, "SELECT count(*) FROM audit_checkpoints");
    let mut ids = Vec::new();
    for i in 0..10 {
        let reference = format!("SWEEP-{i}");
        ids.push(
            pays[i % 2]
                .submit(&hs[i % 2], &terms(&reference, "EUR1.00"))
                .await
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = ids
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    let count_expired =
        format!("SELECT count(*) FROM requests WHERE id IN ({list}) AND status = 'expired'");
    while psql_count(&db, &count_expired) < 10 {
        assert!(
            Instant::now() < deadline,
            "the sweeps did not expire the requests"
        );
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    // Both nodes swept since: a second sweep finds nothing more to do.
    actix_web::rt::time::sleep(Duration::from_secs(6)).await;
    for id in &ids {
        assert_eq!(
            events(&db, "request.expired", &format!("request:{id}")),
            1,
            "{id}"
        );
        let v = pays[0]
            .await_status(id, &["expired"], Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(v["status"], "expired");
    }
    let checkpoints = psql_count(&db, "SELECT count(*) FROM audit_checkpoints");
    assert!(
        checkpoints > checkpoints_before,
        "the timers signed no checkpoint"
    );
    assert_eq!(
        psql_count(
            &db,
            "SELECT count(*) FROM audit_checkpoints WHERE seq = (SELECT max(seq) FROM audit_events)"
        ),
        1,
        "the newest events are checkpointed"
    );
    let o = run_tmcs(&t.data, &t.env, &["audit", "verify"]);
    assert!(o.status.success(), "audit verify: {}", text(&o));
    assert!(
        text(&o).contains(&format!("{checkpoints} signed checkpoints")),
        "{}",
        text(&o)
    );
}
