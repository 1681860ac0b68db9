//! The relay as real processes (CONTRACT §11, issue 9): `tmcs serve`
//! nodes, and the FSP, merchant and bank simulators (`tmcs-tools sim`),
//! over mTLS with the relay certificate `tmcs init` issues. The handset,
//! the merchant and the FSP are driven through the HTTPS API; the openssl
//! CLI checks the receipt's signature; `tmcs audit verify` closes each run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use std::process::Command;
use tmcs::ims::Tier;
use tmcs_tools::trip::{self, balance, receipt_message, Terms, MERCHANT_IBAN, PAYER_IBAN};

/// Whether `sig_b64` over `msg` verifies with `/pki/display.pem`, as
/// `openssl dgst -sha256 -verify` judges it.
async fn verify_with_display(t: &Trip, msg: &str, sig_b64: &str) -> bool {
    use base64::Engine as _;
    let mut res = t
        .anon
        .get(format!("{}/pki/display.pem", t.base()))
        .send()
        .await
        .unwrap();
    let pem = res.body().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, file, sig) = (
        dir.path().join("display.pem"),
        dir.path().join("pub.pem"),
        dir.path().join("msg.txt"),
        dir.path().join("msg.sig"),
    );
    std::fs::write(&cert, &pem).unwrap();
    std::fs::write(&file, msg).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig_b64)
        .unwrap();
    std::fs::write(&sig, der).unwrap();
    let o = Command::new("openssl")
        .args(["x509", "-in"])
        .arg(&cert)
        .args(["-pubkey", "-noout", "-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&key)
        .arg("-signature")
        .arg(&sig)
        .arg(&file)
        .output()
        .unwrap();
    o.status.success() && text(&o).contains("Verified OK")
}

/// The receipt's signature verifies with `/pki/display.pem`; a changed
/// field does not.
async fn receipt_verifies(t: &Trip, receipt: &Value) {
    let sig = receipt["receipt_sig"].as_str().unwrap();
    assert!(
        verify_with_display(t, &receipt_message(receipt), sig).await,
        "receipt_sig does not verify: {receipt}"
    );
    let mut forged = receipt.clone();
    forged["amount"] = json!("EUR999.99");
    assert!(
        !verify_with_display(t, &receipt_message(&forged), sig).await,
        "a forged receipt verified"
    );
}

/// Waits until the FSP and the merchant each got the outcome `key` once.
async fn told(t: &Trip, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fsp = t.sims.fsp.get(&t.operator, "/stats").await.unwrap();
        let merchant = t.sims.merchant.get(&t.operator, "/stats").await.unwrap();
        if by_key(&fsp, key) == 1 && by_key(&merchant, key) == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} not told: {fsp} {merchant}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

fn by_key(stats: &Value, key: &str) -> i64 {
    stats["by_key"][key]["count"].as_i64().unwrap_or(0)
}

/// Mode `fsp+bank`: authorise → the FSP gets the signed iMS once and
/// verifies the payer's signature → the bank settles → `settled`, the FSP
/// and the merchant are told, the receipt verifies, the balances move by
/// exactly the amount; every pain.001 passed the XSD.
#[actix_web::test]
async fn fsp_and_bank_trip_settles_with_a_signed_receipt() {
    let t = Trip::start("fsp+bank", None).await;
    let h = t.handsets(1, 1).await.remove(0);
    let before = t.balances().await;
    let base = t.base();
    let pay = t.payment(&base);
    let paid = pay
        .pay(&h, PIN, &terms("TRIP-1", "EUR12.34"))
        .await
        .unwrap();
    let id = paid.request_id.clone();
    let v = pay
        .await_status(&id, &["settled"], Duration::from_secs(30))
        .await
        .unwrap();
    assert!(v["ims"].as_str().unwrap().contains("<sign>"), "{v}");
    assert!(v.get("reason").is_none(), "{v}");
    // The outcomes are enqueued with `settled` and sent after it.
    told(&t, &format!("{id}:settled")).await;

    let fsp = t.sims.fsp.get(&t.operator, "/stats").await.unwrap();
    assert_eq!(
        by_key(&fsp, &id),
        1,
        "the FSP got the signed iMS once: {fsp}"
    );
    assert_eq!(fsp["by_key"][&id]["event"], "signed");
    assert_eq!(
        fsp["signed_verified"], 1,
        "the FSP verified from/sign over C: {fsp}"
    );
    assert_eq!(fsp["signed_bad"], 0);
    assert_eq!(by_key(&fsp, &format!("{id}:settled")), 1, "{fsp}");
    let merchant = t.sims.merchant.get(&t.operator, "/stats").await.unwrap();
    assert_eq!(by_key(&merchant, &format!("{id}:settled")), 1, "{merchant}");
    assert_eq!(by_key(&merchant, &id), 0, "the merchant gets no signed iMS");
    let bank = t.sims.bank.get(&t.operator, "/stats").await.unwrap();
    assert_eq!(bank["settled"], 1, "{bank}");
    assert_eq!(
        bank["invalid"], 0,
        "every pain.001 validated against the XSD: {bank}"
    );

    let after = t.balances().await;
    assert_eq!(
        balance(&before, PAYER_IBAN, "EUR") - balance(&after, PAYER_IBAN, "EUR"),
        1234
    );
    assert_eq!(
        balance(&after, MERCHANT_IBAN, "EUR") - balance(&before, MERCHANT_IBAN, "EUR"),
        1234
    );

    let r = pay.receipt(&h, &id).await.unwrap();
    assert_eq!(r["status"], "settled");
    assert_eq!(r["ref"], "TRIP-1");
    assert_eq!(r["amount"], "EUR12.34");
    assert_eq!(r["payee"], trip::MERCHANT);
    receipt_verifies(&t, &r).await;
    let path = "/v1/handset/receipts";
    let hdr = h
        .device_header("GET", path, t.clock.now().unix_timestamp())
        .unwrap();
    let mut res = t
        .anon
        .get(format!("{base}{path}"))
        .insert_header(("authorization", hdr))
        .send()
        .await
        .unwrap();
    let list: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert_eq!(list["receipts"][0]["request_id"], id.as_str(), "{list}");

    let actions = t.actions_of(&id).await;
    for a in [
        "request.signed",
        "relay.delivered",
        "request.relayed",
        "request.settled",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} missing in {actions:?}");
    }
    // signed, instruction, two outcomes.
    assert_eq!(
        actions.iter().filter(|x| *x == "relay.delivered").count(),
        4,
        "{actions:?}"
    );
    let ds = t.deliveries_of(&id).await;
    assert_eq!(ds.len(), 4, "{ds:?}");
    assert!(
        ds.iter()
            .all(|d| d["status"] == "delivered" && d["attempts"] == 1),
        "{ds:?}"
    );
    t.audit_verifies();
}

/// Mode `fsp`: the FSP reports its bank's outcome; the same again is 200
/// unchanged, another is 409 `request.conflict`; a receipt follows.
#[actix_web::test]
async fn fsp_mode_settles_through_the_outcome_route() {
    let t = Trip::start("fsp", None).await;
    let h = t.handsets(2, 1).await.remove(0);
    let base = t.base();
    let pay = t.payment(&base);
    let paid = pay.pay(&h, PIN, &terms("FSP-1", "EUR3.00")).await.unwrap();
    let id = paid.request_id;
    let receipt_path = format!("/v1/handset/receipts/{id}");
    pay.await_status(&id, &["relayed"], Duration::from_secs(20))
        .await
        .unwrap();
    // Not ended yet: no receipt.
    let hdr = h
        .device_header("GET", &receipt_path, t.clock.now().unix_timestamp())
        .unwrap();
    let mut res = t
        .anon
        .get(format!("{base}{receipt_path}"))
        .insert_header(("authorization", hdr))
        .send()
        .await
        .unwrap();
    let b: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert_eq!(
        (res.status().as_u16(), b["code"].as_str()),
        (404, Some("receipt.not_ready"))
    );
    let outcome = format!("/v1/fsp/requests/{id}/outcome");
    let (st, v) = t
        .post(&t.fsp_client, &outcome, &json!({"status": "settled"}))
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("settled")), "{v}");
    let (st, v) = t
        .post(&t.fsp_client, &outcome, &json!({"status": "settled"}))
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (200, Some("settled")),
        "the same again: {v}"
    );
    let (st, v) = t
        .post(
            &t.fsp_client,
            &outcome,
            &json!({"status": "rolled_back", "reason": "AM04"}),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("request.conflict")),
        "{v}"
    );
    let (st, v) = t
        .post(&t.fsp_client, &outcome, &json!({"status": "signed"}))
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("request.invalid")),
        "{v}"
    );
    // The FSP and the merchant are told.
    told(&t, &format!("{id}:settled")).await;
    // No bank in mode fsp.
    let bank = t.sims.bank.get(&t.operator, "/stats").await.unwrap();
    assert_eq!(bank["instructions"], 0, "{bank}");
    let r = pay.receipt(&h, &id).await.unwrap();
    assert_eq!(r["status"], "settled");
    receipt_verifies(&t, &r).await;
    assert!(t
        .actions_of(&id)
        .await
        .iter()
        .any(|a| a == "request.settled"));
    t.audit_verifies();
}

/// The bank answers RJCT AM04 → `rolled_back`, balances unchanged, the FSP
/// and the merchant told; 500s → retried with backoff until the bank
/// recovers; timeouts → `failed` after the cap, then an operator retry
/// settles it.
#[actix_web::test]
async fn bank_rejects_errors_and_timeouts() {
    let t = Trip::start("fsp+bank", None).await;
    let hs = t.handsets(3, 1).await;
    let h = &hs[0];
    let base = t.base();
    let pay = t.payment(&base);
    let bank = &t.sims.bank;

    // RJCT.
    bank.control(&t.operator, json!({"mode": "reject", "reason": "AM04"}))
        .await
        .unwrap();
    let before = t.balances().await;
    let id = pay
        .pay(h, PIN, &terms("RJ-1", "EUR5.00"))
        .await
        .unwrap()
        .request_id;
    let v = pay
        .await_status(&id, &["rolled_back"], Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(v["reason"], "AM04", "{v}");
    assert_eq!(
        t.balances().await["accounts"],
        before["accounts"],
        "balances unchanged"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fsp = t.sims.fsp.get(&t.operator, "/stats").await.unwrap();
        let merchant = t.sims.merchant.get(&t.operator, "/stats").await.unwrap();
        let key = format!("{id}:rolled_back");
        if by_key(&fsp, &key) == 1 && by_key(&merchant, &key) == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rollback outcome: {fsp} {merchant}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let r = pay.receipt(h, &id).await.unwrap();
    assert_eq!(
        (r["status"].as_str(), r["reason"].as_str()),
        (Some("rolled_back"), Some("AM04"))
    );
    receipt_verifies(&t, &r).await;
    assert!(t
        .actions_of(&id)
        .await
        .iter()
        .any(|a| a == "request.rolled_back"));

    // 500s, then the bank recovers.
    bank.control(&t.operator, json!({"mode": "500"}))
        .await
        .unwrap();
    let before = t.balances().await;
    let id = pay
        .pay(h, PIN, &terms("E5-1", "EUR2.50"))
        .await
        .unwrap()
        .request_id;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ds = t.deliveries_of(&id).await;
        let retried = ds.iter().any(|d| {
            d["event"] == "instruction"
                && d["attempts"].as_i64().unwrap() >= 2
                && d["status"] == "pending"
                && d["last_error"].as_str().unwrap_or("").contains("500")
        });
        if retried {
            break;
        }
        assert!(Instant::now() < deadline, "no retry: {ds:?}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    bank.control(&t.operator, json!({"mode": "ok"}))
        .await
        .unwrap();
    pay.await_status(&id, &["settled"], Duration::from_secs(20))
        .await
        .unwrap();
    let after = t.balances().await;
    assert_eq!(
        balance(&before, PAYER_IBAN, "EUR") - balance(&after, PAYER_IBAN, "EUR"),
        250
    );
    let actions = t.actions_of(&id).await;
    assert!(actions.iter().any(|a| a == "relay.retry"), "{actions:?}");

    // Timeouts until the cap → failed; the operator retries → settled.
    bank.control(&t.operator, json!({"mode": "timeout"}))
        .await
        .unwrap();
    let before = t.balances().await;
    let id = pay
        .pay(h, PIN, &terms("TO-1", "EUR1.25"))
        .await
        .unwrap()
        .request_id;
    let v = pay
        .await_status(&id, &["failed"], Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(v["reason"], "relay.instruction.failed", "{v}");
    let (st, failed) = t.get(&t.operator, "/v1/admin/relay?status=failed").await;
    assert_eq!(st, 200);
    let d = failed["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["request_id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no failed delivery: {failed}"));
    assert_eq!(d["event"], "instruction");
    assert_eq!(d["attempts"], 4, "{d}");
    assert!(d["next_attempt_at"].is_null(), "{d}");
    let metrics = {
        let mut res = t.anon.get(format!("{base}/metrics")).send().await.unwrap();
        String::from_utf8_lossy(&res.body().await.unwrap()).to_string()
    };
    assert!(
        metrics.contains(
            "tmcs_relay_failures_total{event=\"instruction\",target=\"Demo.Bank@bank.xbank\"} 1"
        ),
        "{metrics}"
    );
    let r = pay.receipt(h, &id).await.unwrap();
    assert_eq!(r["status"], "failed");
    let delivery = d["delivery_id"].as_str().unwrap();
    bank.control(&t.operator, json!({"mode": "ok"}))
        .await
        .unwrap();
    let (st, v) = t
        .post(
            &t.operator,
            &format!("/v1/admin/relay/{delivery}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("pending")), "{v}");
    let v = pay
        .await_status(&id, &["settled"], Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        v.get("reason").is_none() && v.get("error").is_none(),
        "the failure is history once it settled: {v}"
    );
    let after = t.balances().await;
    assert_eq!(
        balance(&before, PAYER_IBAN, "EUR") - balance(&after, PAYER_IBAN, "EUR"),
        125
    );
    let (st, v) = t
        .post(
            &t.operator,
            &format!("/v1/admin/relay/{delivery}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("delivery.not_failed")),
        "{v}"
    );
    let (st, v) = t
        .post(
            &t.operator,
            "/v1/admin/relay/no-such-delivery/retry",
            &json!({}),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("delivery.not_found")),
        "{v}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fsp = t.sims.fsp.get(&t.operator, "/stats").await.unwrap();
        if by_key(&fsp, &format!("{id}:failed")) == 1 && by_key(&fsp, &format!("{id}:settled")) == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the FSP was not told failed, then settled: {fsp}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let r = pay.receipt(h, &id).await.unwrap();
    assert_eq!(r["status"], "settled");
    receipt_verifies(&t, &r).await;
    let actions = t.actions_of(&id).await;
    for a in [
        "relay.failed",
        "request.failed",
        "relay.retry",
        "request.settled",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} missing in {actions:?}");
    }
    t.audit_verifies();
}

/// Two `tmcs serve` nodes on one PostgreSQL database and one HSM token;
/// at least 200 payments; node A is killed with `kill -9` twice while it
/// has deliveries in flight, and restarted. Every signed request ends
/// `settled`; each simulator counts each idempotency key once after
/// deduplication, and the raw duplicates are at most the deliveries that
/// were in flight at the kills.
#[actix_web::test]
async fn two_nodes_survive_kill_9_with_deliveries_in_flight() {
    const TEST: &str = "two_nodes_survive_kill_9_with_deliveries_in_flight";
    let Some((url, db)) = postgres_url(TEST) else {
        return;
    };
    let t = Trip::start("fsp+bank", Some(&url)).await;
    // Node B: the same data (token, CA, configuration) and database.
    let mut b = Node::new("node-b", &t.data, &t.env);
    b.start().await;
    let base_b = b.base();
    // Slow receivers keep deliveries in flight long enough to be cut.
    for sim in [&t.sims.fsp, &t.sims.merchant, &t.sims.bank] {
        sim.control(&t.operator, json!({"mode": "slow", "slow_ms": 150}))
            .await
            .unwrap();
    }
    const HANDSETS: usize = 8;
    const EACH: usize = 27;
    let total = HANDSETS * EACH;
    let hs = trip::activate_handsets(&base_b, &t.operator, &t.anon, 4, HANDSETS, PIN)
        .await
        .unwrap();
    let before = t.balances().await;
    let done = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let ids = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let t0 = Instant::now();
    let payments = {
        let pay = t.payment(&base_b);
        let (done, ids) = (done.clone(), ids.clone());
        async move {
            let loops = hs.iter().enumerate().map(|(i, h)| {
                let (pay, done, ids) = (&pay, done.clone(), ids.clone());
                async move {
                    for k in 0..EACH {
                        let reference = format!("K9-{i}-{k}");
                        let paid = pay
                            .pay(h, PIN, &terms(&reference, "EUR1.00"))
                            .await
                            .unwrap();
                        ids.borrow_mut().push(paid.request_id);
                        done.set(done.get() + 1);
                    }
                }
            });
            futures_util::future::join_all(loops).await;
        }
    };
    let node_a = &t.node;
    let killer = async {
        let mut in_flight_at_kills = 0i64;
        for threshold in [total / 3, 2 * total / 3] {
            while done.get() < threshold {
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            let leased = "SELECT count(*) FROM deliveries WHERE status = 'delivering' AND lease_owner = 'node-a'";
            while psql_count(&db, leased) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "node A never had a delivery in flight"
                );
                actix_web::rt::time::sleep(Duration::from_millis(10)).await;
            }
            node_a.borrow_mut().kill9();
            // What A held when it died: each may reach its receiver again.
            let cut = psql_count(&db, leased);
            in_flight_at_kills += cut;
            eprintln!(
                "kill -9 node A after {} payments: {cut} deliveries in flight",
                done.get()
            );
            actix_web::rt::time::sleep(Duration::from_millis(300)).await;
            let log = node_a.borrow_mut().spawn();
            wait_listening(|| node_a.borrow_mut().listening(&log)).await;
        }
        in_flight_at_kills
    };
    let ((), in_flight_at_kills) = futures_util::future::join(payments, killer).await;
    let ids = ids.borrow().clone();
    assert_eq!(ids.len(), total);
    let pay = t.payment(&base_b);
    for id in &ids {
        pay.await_status(id, &["settled"], Duration::from_secs(120))
            .await
            .unwrap();
    }
    // The outcomes follow the settlement: wait until the outbox is empty.
    let deadline = Instant::now() + Duration::from_secs(60);
    let open = "SELECT count(*) FROM deliveries WHERE status <> 'delivered'";
    while psql_count(&db, open) > 0 {
        assert!(Instant::now() < deadline, "deliveries still open");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let n = i64::try_from(total).unwrap();
    let fsp = t.sims.fsp.get(&t.operator, "/stats").await.unwrap();
    let merchant = t.sims.merchant.get(&t.operator, "/stats").await.unwrap();
    let bank = t.sims.bank.get(&t.operator, "/stats").await.unwrap();
    // After deduplication, each key once.
    assert_eq!(
        fsp["keys"],
        2 * n,
        "signed + settled per request: {}",
        fsp["keys"]
    );
    assert_eq!(fsp["signed_verified"], n);
    assert_eq!(fsp["outcomes"]["settled"], n);
    assert_eq!(merchant["keys"], n);
    assert_eq!(merchant["outcomes"]["settled"], n);
    assert_eq!(bank["keys"], n);
    assert_eq!(bank["settled"], n);
    assert_eq!(bank["invalid"], 0);
    for id in &ids {
        assert!(
            by_key(&fsp, id) >= 1 && by_key(&bank, id) >= 1,
            "{id} not delivered"
        );
    }
    let after = t.balances().await;
    assert_eq!(
        balance(&before, PAYER_IBAN, "EUR") - balance(&after, PAYER_IBAN, "EUR"),
        100 * n,
        "each payment moved the money once"
    );
    let raw = |s: &Value, raw: &str| s[raw].as_i64().unwrap() - s["keys"].as_i64().unwrap();
    let duplicates =
        raw(&fsp, "deliveries") + raw(&merchant, "deliveries") + raw(&bank, "instructions");
    println!(
        "{}",
        json!({
            "test": TEST, "payments": total, "seconds": (elapsed * 10.0).round() / 10.0,
            "raw_duplicate_deliveries": duplicates, "in_flight_at_kills": in_flight_at_kills,
            "node_a_starts": t.node.borrow().starts,
        })
    );
    assert!(
        duplicates <= in_flight_at_kills,
        "{duplicates} raw duplicates, more than the {in_flight_at_kills} deliveries in flight at the kills"
    );
    assert_eq!(
        psql_count(&db, "SELECT count(*) FROM deliveries"),
        4 * n,
        "signed, instruction and two outcomes per request, each enqueued once"
    );
    drop(b);
    t.audit_verifies();
}

/// The amount held at the bank on `account` (minor units; 0 when none).
async fn held(t: &Trip, account: &str) -> i64 {
    t.balances().await["held"][account]["EUR"]
        .as_i64()
        .unwrap_or(0)
}

/// Waits until nothing is held on `account` (the reservation was released).
async fn released(t: &Trip, account: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while held(t, account).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the reservation on an account was not released"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CONTRACT §12 on one backend: the right amount activates an instrument
/// and its reservation is released; three wrong amounts block another, also
/// released; an alias payment settles with the account in the pain.001 and
/// only the alias in the signed iMS, the FSP's view and the handset's
/// signed display; a disconnected alias is `instrument.unknown`; no amount
/// and no full account in the debug log, the audit details or the error
/// bodies.
async fn instruments_on(db_url: Option<&str>) {
    const ACCOUNT: &str = "GB82WEST12345698765432";
    const OTHER: &str = "NL91ABNA0417164300";
    let t = Trip::start_with("fsp+bank", db_url, &[("RUST_LOG", "debug")]).await;
    let h = t.handsets(5, 1).await.remove(0);
    let base = t.base();
    let pay = t.payment(&base);
    let mut bodies = Vec::new();
    let mut amounts = Vec::new();

    // Link: the bank holds a micro-amount; a wrong one counts; the right one activates.
    let (st, v) = pay
        .handset(
            &h,
            "POST",
            "/v1/handset/instruments",
            Some(&json!({"account": ACCOUNT, "alias": "main"})),
        )
        .await
        .unwrap();
    assert_eq!((st, v["status"].as_str()), (202, Some("verifying")), "{v}");
    let main_id = v["instrument_id"].as_str().unwrap().to_string();
    let amount = held(&t, ACCOUNT).await;
    assert!((1..=99).contains(&amount), "held {amount}");
    amounts.push(amount);
    let confirm = format!("/v1/handset/instruments/{main_id}/confirm");
    let wrong = format!("EUR0.{:02}", amount % 99 + 1);
    let (st, v) = pay
        .handset(&h, "POST", &confirm, Some(&json!({"amount": wrong})))
        .await
        .unwrap();
    assert_eq!(
        (st, v["code"].as_str(), v["attempts_left"].as_i64()),
        (403, Some("instrument.bad_amount"), Some(2)),
        "{v}"
    );
    bodies.push(v.to_string());
    assert_eq!(
        held(&t, ACCOUNT).await,
        amount,
        "a wrong amount keeps the reservation"
    );
    let (st, v) = pay
        .handset(
            &h,
            "POST",
            &confirm,
            Some(&json!({"amount": format!("EUR0.{amount:02}")})),
        )
        .await
        .unwrap();
    assert_eq!((st, v["status"].as_str()), (200, Some("active")), "{v}");
    released(&t, ACCOUNT).await;
    let (st, v) = pay
        .handset(&h, "POST", &confirm, Some(&json!({"amount": "EUR0.01"})))
        .await
        .unwrap();
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("instrument.not_verifying")),
        "{v}"
    );
    let (st, v) = pay
        .handset(
            &h,
            "POST",
            "/v1/handset/instruments",
            Some(&json!({"account": OTHER, "alias": "main"})),
        )
        .await
        .unwrap();
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("instrument.exists")),
        "{v}"
    );
    bodies.push(v.to_string());
    let (st, v) = pay
        .handset(
            &h,
            "POST",
            "/v1/handset/instruments",
            Some(&json!({"account": "DE89370400440532013001", "alias": "bad"})),
        )
        .await
        .unwrap();
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("request.invalid")),
        "a bad IBAN checksum: {v}"
    );
    bodies.push(v.to_string());

    // Three wrong amounts block; the reservation is released.
    let (st, v) = pay
        .handset(
            &h,
            "POST",
            "/v1/handset/instruments",
            Some(&json!({"account": OTHER, "alias": "second"})),
        )
        .await
        .unwrap();
    assert_eq!(st, 202, "{v}");
    let second = v["instrument_id"].as_str().unwrap().to_string();
    let a2 = held(&t, OTHER).await;
    assert!(a2 > 0);
    amounts.push(a2);
    let confirm2 = format!("/v1/handset/instruments/{second}/confirm");
    let wrong = format!("EUR0.{:02}", a2 % 99 + 1);
    for left in [Some(2), Some(1), None] {
        let (st, v) = pay
            .handset(&h, "POST", &confirm2, Some(&json!({"amount": wrong})))
            .await
            .unwrap();
        match left {
            Some(n) => assert_eq!(
                (st, v["code"].as_str(), v["attempts_left"].as_i64()),
                (403, Some("instrument.bad_amount"), Some(n)),
                "{v}"
            ),
            None => assert_eq!(
                (st, v["code"].as_str()),
                (403, Some("instrument.blocked")),
                "{v}"
            ),
        }
        bodies.push(v.to_string());
    }
    released(&t, OTHER).await;
    let (st, v) = pay
        .handset(
            &h,
            "POST",
            &confirm2,
            Some(&json!({"amount": format!("EUR0.{a2:02}")})),
        )
        .await
        .unwrap();
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("instrument.blocked")),
        "the right amount is too late: {v}"
    );

    let (st, list) = pay
        .handset(&h, "GET", "/v1/handset/instruments", None)
        .await
        .unwrap();
    assert_eq!(st, 200, "{list}");
    let shown: Vec<(String, String)> = list["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["alias"].as_str().unwrap().into(),
                i["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(shown.contains(&("main".into(), "active".into())), "{list}");
    assert!(
        shown.contains(&("second".into(), "blocked".into())),
        "{list}"
    );
    assert!(
        list.to_string().contains("GB82") && !list.to_string().contains(ACCOUNT),
        "masked: {list}"
    );

    // An alias payment: the handset is told which instrument pays, signed.
    let before = t.balances().await;
    let alias_terms = Terms {
        reference: "ALIAS-1",
        amount: "EUR7.00",
        tier: Tier::Small,
        payable: "alias:main",
        receivable: MERCHANT_IBAN,
    };
    let id = pay.submit(&h, &alias_terms).await.unwrap();
    let view = pay.view(&h, &id).await.unwrap();
    assert_eq!(view["instrument"], "main", "{view}");
    let display = format!(
        "tmcs-display-v1\nrequest_id:{id}\npayee:{}\namount:EUR7.00\nverification_code:{}\ndtbs_sha256:{}\nexpires_at:{}\ninstrument:main\n",
        trip::MERCHANT,
        view["verification_code"].as_str().unwrap(),
        view["dtbs_sha256"].as_str().unwrap(),
        view["expires_at"].as_str().unwrap(),
    );
    display_sig_verifies(&t, &display, view["display_sig"].as_str().unwrap()).await;
    pay.authorize(&h, PIN, &id, &view).await.unwrap();
    let v = pay
        .await_status(&id, &["settled"], Duration::from_secs(30))
        .await
        .unwrap();
    let signed = v["ims"].as_str().unwrap();
    assert!(
        signed.contains("<accountPayable>alias:main</accountPayable>") && !signed.contains(ACCOUNT),
        "{signed}"
    );
    let after = t.balances().await;
    assert_eq!(
        balance(&before, ACCOUNT, "EUR") - balance(&after, ACCOUNT, "EUR"),
        700,
        "the bank debited the account behind the alias"
    );
    let bank = t.sims.bank.get(&t.operator, "/stats").await.unwrap();
    assert_eq!(
        bank["invalid"], 0,
        "the pain.001 with the account validated: {bank}"
    );
    told(&t, &format!("{id}:settled")).await;
    let fsp = t.sims.fsp.get(&t.operator, "/stats").await.unwrap();
    assert!(!fsp.to_string().contains(ACCOUNT), "{fsp}");
    let merchant = t.sims.merchant.get(&t.operator, "/stats").await.unwrap();
    assert!(!merchant.to_string().contains(ACCOUNT), "{merchant}");

    // Disconnected while verifying: the reservation is released too.
    const THIRD: &str = "FR1420041010050500013M02606";
    let (st, v) = pay
        .handset(
            &h,
            "POST",
            "/v1/handset/instruments",
            Some(&json!({"account": THIRD, "alias": "third"})),
        )
        .await
        .unwrap();
    assert_eq!(st, 202, "{v}");
    let a3 = held(&t, THIRD).await;
    assert!(a3 > 0);
    amounts.push(a3);
    let third = v["instrument_id"].as_str().unwrap().to_string();
    let (st, v) = pay
        .handset(
            &h,
            "DELETE",
            &format!("/v1/handset/instruments/{third}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (st, v["status"].as_str()),
        (200, Some("disconnected")),
        "{v}"
    );
    released(&t, THIRD).await;

    // Disconnected: out of use at once.
    let (st, v) = pay
        .handset(
            &h,
            "DELETE",
            &format!("/v1/handset/instruments/{main_id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (st, v["status"].as_str()),
        (200, Some("disconnected")),
        "{v}"
    );
    let again = Terms {
        reference: "ALIAS-2",
        ..alias_terms.clone()
    };
    let (st, v) = pay.submit_raw(&h, &again).await.unwrap();
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("instrument.unknown")),
        "{v}"
    );
    bodies.push(v.to_string());
    let (st, v) = pay
        .submit_raw(
            &h,
            &Terms {
                reference: "ALIAS-3",
                payable: "alias:second",
                ..alias_terms.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("instrument.unknown")),
        "a blocked alias: {v}"
    );

    // Nothing secret in the audit trail, the error bodies or the debug log.
    let auditor = tmcs_client::https::https_client(
        &t.data.join("ca.pem"),
        Some((
            &t.data.join("clients/auditor.crt"),
            &t.data.join("clients/auditor.key"),
        )),
    )
    .unwrap();
    let (st, events) = t
        .get(&auditor, "/v1/audit/events?action=instrument.*&limit=1000")
        .await;
    assert_eq!(st, 200);
    let actions: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "instrument.requested",
        "instrument.failed",
        "instrument.confirmed",
        "instrument.blocked",
        "instrument.disconnected",
    ] {
        assert!(actions.contains(&a), "{a} missing: {actions:?}");
    }
    let (_, all) = t.get(&auditor, "/v1/audit/events?limit=1000").await;
    let log: String = std::fs::read_dir(t.data.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("node-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(log.contains("DEBUG"), "the node ran with RUST_LOG=debug");
    for secret in [ACCOUNT.to_string(), OTHER.to_string(), THIRD.to_string()]
        .into_iter()
        .chain(amounts.iter().map(|a| format!("EUR0.{a:02}")))
    {
        for (what, text) in [
            ("audit", all.to_string()),
            ("log", log.clone()),
            ("errors", bodies.join("\n")),
        ] {
            assert!(!text.contains(&secret), "{what} holds a secret value");
        }
    }
    t.audit_verifies();
}

/// `display_sig` covers the `instrument:` line: with it the signature
/// verifies, without it not.
async fn display_sig_verifies(t: &Trip, msg: &str, sig_b64: &str) {
    assert!(
        verify_with_display(t, msg, sig_b64).await,
        "display_sig: {msg}"
    );
    let without = msg.replace("instrument:main\n", "");
    assert!(
        !verify_with_display(t, &without, sig_b64).await,
        "display_sig does not cover the instrument line"
    );
}

#[actix_web::test]
async fn instruments_sqlite() {
    instruments_on(None).await;
}

#[actix_web::test]
async fn instruments_postgres() {
    let Some((url, _)) = postgres_url("instruments_postgres") else {
        return;
    };
    instruments_on(Some(&url)).await;
}
