//! The relay's edges that need no receiver (CONTRACT §11). The trips through
//! real FSP, merchant and bank simulators, as processes, are
//! `tools/tests/relay.rs`.

use serde_json::json;

use super::{problem, request_count, Fx, PIN};
use crate::on_both_backends_async;
use crate::support::{get_json, post_json, random_msisdn, unique, Db};

/// An FSP without `callback_url`: signing enqueues nothing and the request
/// stays `signed`; the outcome route, the receipt and the operator's retry
/// refuse with their codes and change nothing.
async fn without_a_callback_nothing_is_relayed(db: Db) {
    let Some(fx) = Fx::start(db, "relay_no_callback").await else {
        return;
    };
    let msisdn = random_msisdn();
    let (h, _) = fx.s.active_subscriber(&msisdn, PIN).await;
    let m = fx.signed(&msisdn, "small", "EUR4.00", &unique("RL-"));
    let id = fx.submit_ok(&m).await;
    // Not ended: no receipt yet.
    let r = fx
        .handset_get(&h, &format!("/v1/handset/receipts/{id}"))
        .await;
    problem(&r, 404, "receipt.not_ready");
    let r = fx.authorize(&h, &id, PIN).await;
    assert_eq!(r.0, 200, "{}", r.2);
    let operator = fx.s.as_client("operator");
    let (st, _, list) = get_json(&operator, &fx.s.url("/v1/admin/relay")).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(
        list["deliveries"],
        json!([]),
        "no callback_url, no delivery"
    );
    assert_eq!(fx.fsp_view(&id).await["status"], "signed");

    // Only from relayed.
    let outcome = fx.s.url(&format!("/v1/fsp/requests/{id}/outcome"));
    let r = post_json(&fx.fsp_client, &outcome, &json!({"status": "settled"})).await;
    problem(&r, 409, "request.conflict");
    let r = post_json(&fx.fsp_client, &outcome, &json!({"status": "expired"})).await;
    problem(&r, 400, "request.invalid");
    let r = post_json(
        &fx.fsp_client,
        &outcome,
        &json!({"status": "rolled_back", "reason": "x\ny"}),
    )
    .await;
    problem(&r, 400, "request.invalid");
    let r = post_json(
        &fx.fsp_client,
        &outcome,
        &json!({"status": "settled", "extra": 1}),
    )
    .await;
    problem(&r, 400, "request.malformed");
    let r = post_json(
        &fx.fsp_client,
        &fx.s
            .url("/v1/fsp/requests/00000000-0000-0000-0000-000000000000/outcome"),
        &json!({"status": "settled"}),
    )
    .await;
    problem(&r, 404, "request.not_found");
    assert_eq!(
        fx.fsp_view(&id).await["status"],
        "signed",
        "refusals change nothing"
    );
    let r = fx
        .handset_get(&h, &format!("/v1/handset/receipts/{id}"))
        .await;
    problem(&r, 404, "receipt.not_ready");
    let r = fx.handset_get(&h, "/v1/handset/receipts").await;
    assert_eq!((r.0, &r.2["receipts"]), (200, &json!([])), "{}", r.2);

    // Another payer's request is not found, not "not ready".
    let other = random_msisdn();
    let (h2, _) = fx.s.active_subscriber(&other, PIN).await;
    let r = fx
        .handset_get(&h2, &format!("/v1/handset/receipts/{id}"))
        .await;
    problem(&r, 404, "request.not_found");

    // The operator's view: its query is checked; a retry needs a failed delivery.
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?status=delivering",
        "?status=nope",
    ] {
        let r = get_json(&operator, &fx.s.url(&format!("/v1/admin/relay{bad}"))).await;
        problem(&r, 400, "request.invalid");
    }
    let r = post_json(
        &operator,
        &fx.s.url("/v1/admin/relay/no-such-delivery/retry"),
        &json!({}),
    )
    .await;
    problem(&r, 404, "delivery.not_found");
    // The FSP may not use the operator's routes.
    let (st, _, _) = get_json(&fx.fsp_client, &fx.s.url("/v1/admin/relay")).await;
    assert_eq!(st, 403);
    fx.finish().await;
}
on_both_backends_async!(
    without_a_callback_nothing_is_relayed,
    without_a_callback_nothing_is_relayed
);

/// tmcs calls receivers over mTLS: a `callback_url` must be https.
async fn callback_urls_are_https(db: Db) {
    let Some(fx) = Fx::start(db, "relay_https_callbacks").await else {
        return;
    };
    let operator = fx.s.as_client("operator");
    for (i, bad) in [
        "http://fsp.example/events",
        "https://",
        "https://user:pw@fsp.example/events",
        "https://fsp.example/ev ents",
        "ftp://fsp.example/",
    ]
    .iter()
    .enumerate()
    {
        let key = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let key = openssl::pkey::PKey::from_ec_key(key).unwrap();
        let mut req = openssl::x509::X509ReqBuilder::new().unwrap();
        req.set_pubkey(&key).unwrap();
        req.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let csr = String::from_utf8(req.build().to_pem().unwrap()).unwrap();
        let r = post_json(
            &operator,
            &fx.s.url("/v1/admin/parties"),
            &json!({"party_id": format!("Shop{i}@merchant.example"), "kind": "merchant", "csr": csr, "callback_url": bad}),
        )
        .await;
        problem(&r, 400, "request.invalid");
    }
    fx.finish().await;
}
on_both_backends_async!(callback_urls_are_https, callback_urls_are_https);

/// Mode `fsp+bank`: what is signed must be instructable to the bank as it
/// stands, so an account that is no IBAN and longer than ISO 20022's
/// Max34Text is refused at submission, audited, with nothing stored.
async fn bank_mode_refuses_accounts_a_bank_cannot_take(db: Db) {
    let Some(fx) = Fx::start_with(
        db,
        "relay_bank_mode_accounts",
        &[
            ("TMCS_RELAY__MODE", "fsp+bank"),
            ("TMCS_RELAY__BANK", "Demo.Bank@bank.xbank"),
        ],
    )
    .await
    else {
        return;
    };
    let msisdn = random_msisdn();
    let (h, _) = fx.s.active_subscriber(&msisdn, PIN).await;
    let mut m = fx.ims(&msisdn, "small", "EUR4.00", &unique("RL-"));
    m.account_payable = "9".repeat(35);
    fx.sign(&mut m);
    let before = request_count(&fx.s);
    let r = fx.refused(&m.to_xml(), 400, "ims.malformed").await;
    assert!(
        r.2["detail"].as_str().unwrap().contains("Max34Text"),
        "{}",
        r.2
    );
    assert_eq!(request_count(&fx.s), before);
    // A 34-character account, or a long IBAN, is fine.
    let mut m = fx.ims(&msisdn, "small", "EUR4.00", &unique("RL-"));
    m.account_payable = "9".repeat(34);
    m.account_receivable = "DE89370400440532013000".into();
    fx.sign(&mut m);
    fx.submit_ok(&m).await;
    // An alias is not measured against Max34Text (its account was checked
    // when linked): the longest alias is looked up, and unknown.
    let mut m = fx.ims(&msisdn, "small", "EUR4.00", &unique("RL-"));
    m.account_payable = format!("alias:{}", "a".repeat(32));
    fx.sign(&mut m);
    fx.refused(&m.to_xml(), 404, "instrument.unknown").await;
    // Instruments need the bank party (here relay.bank names none).
    let r = fx
        .handset_post(
            &h,
            "/v1/handset/instruments",
            &json!({"account": "DE89370400440532013000", "alias": "main"}),
        )
        .await;
    problem(&r, 409, "instrument.unavailable");
    let r = fx
        .handset_post(
            &h,
            "/v1/handset/instruments/nope/confirm",
            &json!({"amount": "EUR0.10"}),
        )
        .await;
    problem(&r, 404, "instrument.unknown");
    // The FSP's own outcome report is not taken in this mode.
    let mut m = fx.ims(&msisdn, "small", "EUR4.00", &unique("RL-"));
    fx.sign(&mut m);
    let id = fx.submit_ok(&m).await;
    let r = post_json(
        &fx.fsp_client,
        &fx.s.url(&format!("/v1/fsp/requests/{id}/outcome")),
        &json!({"status": "settled"}),
    )
    .await;
    problem(&r, 409, "request.conflict");
    fx.finish().await;
}
on_both_backends_async!(
    bank_mode_refuses_accounts_a_bank_cannot_take,
    bank_mode_refuses_accounts_a_bank_cannot_take
);
