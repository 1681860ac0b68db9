//! The signing flow when everything is right: the canonical forms M, F and C
//! (CONTRACT §5) written out by the test itself, the FSP's submission and its
//! idempotent repeat (§6), what the handset is shown and the `display_sig`
//! over it (§7), one signature over exactly C judged by the openssl CLI and
//! the signed iMS handed back to the FSP (§6–§7), exactly one winner among
//! concurrent authorisations (§7), and person-to-person payments, where the
//! calling FSP signs M for a payee without a certificate (§5).

use serde_json::{json, Value};
use time::OffsetDateTime;
use tmcs::ims::{ImsMessage, PartyId};
use tmcs_client::Handset;

use super::{
    assert_signature, b64, dtbs_of, problem, request_count, request_events, sign_with, stored,
    unb64, Fx, Reply, MERCHANT, PIN,
};
use crate::on_both_backends_async;
use crate::pkicheck::{openssl_bg, path_str, write_pem};
use crate::support::{json_of, post_json, random_msisdn, unique, Db, Served};

async fn fetch_text(s: &Served, path: &str) -> String {
    let mut res = s.anonymous().get(s.url(path)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    String::from_utf8(res.body().await.unwrap().to_vec()).unwrap()
}

fn timestamp_text(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn rfc3339(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

/// An active subscriber (handset, certificate) and a small payment from it
/// to the merchant, submitted once: the message and the 202 reply.
struct Submitted {
    h: Handset,
    cert: String,
    m: ImsMessage,
    sub: Value,
    id: String,
}

async fn submitted(fx: &Fx) -> Submitted {
    let msisdn = random_msisdn();
    let (h, cert) = fx.s.active_subscriber(&msisdn, PIN).await;
    let m = fx.signed(&msisdn, "small", "EUR25.00", "POS-7-000123");
    let (st, _, sub) = fx.submit(&m.to_xml()).await;
    assert_eq!(st, 202, "{sub}");
    let id = sub["request_id"].as_str().unwrap().to_string();
    Submitted {
        h,
        cert,
        m,
        sub,
        id,
    }
}

// ---------------------------------------------------------------------------
// The happy path, step by step

/// M, F and C are exactly the `ims-c1` strings of CONTRACT §5, and the
/// merchant's and the FSP's signatures over them are good by openssl.
async fn canonical_forms_are_the_contracts_and_party_signatures_verify(db: Db) {
    let Some(fx) = Fx::start(db, "canonical_forms_and_party_signatures").await else {
        return;
    };
    let msisdn = random_msisdn();
    let m = fx.signed(&msisdn, "small", "EUR25.00", "POS-7-000123");
    // The test's own M, F and C, written out as CONTRACT §5 defines them.
    let ts = timestamp_text(m.timestamp);
    let own_m = format!(
        "ims-c1\ntype:small\nref:POS-7-000123\nfrom.id:tel:{msisdn}\nto.id:{MERCHANT}\ntimestamp:{ts}\namount:EUR25.00\n"
    );
    let own_f = format!(
        "{own_m}accountPayable:1234-5678-9abc\naccountReceivable:9876-543-21de\nto.sign:{}\n",
        b64(m.to_sign.as_deref().unwrap())
    );
    let own_c = format!("{own_f}fsp.sign:{}\n", b64(m.fsp_sign.as_deref().unwrap()));
    assert_eq!(String::from_utf8(m.canonical_m()).unwrap(), own_m);
    assert_eq!(String::from_utf8(m.canonical_f().unwrap()).unwrap(), own_f);
    let c = own_c.into_bytes();
    assert_eq!(m.canonical_c().unwrap(), c);
    // The merchant's and the FSP's signatures are good by the openssl judge too.
    assert_signature(
        &fx.env,
        &fx.merchant.cert_pem,
        own_m.as_bytes(),
        m.to_sign.as_deref().unwrap(),
    )
    .await;
    assert_signature(
        &fx.env,
        &fx.fsp.cert_pem,
        own_f.as_bytes(),
        m.fsp_sign.as_deref().unwrap(),
    )
    .await;
    fx.finish().await;
}
on_both_backends_async!(
    canonical_forms_are_the_contracts_and_party_signatures_verify,
    canonical_forms_are_the_contracts_and_party_signatures_verify
);

/// A good message is accepted (202, ~120 s to authorise), and the same
/// bytes again name the same request without creating anything.
async fn submission_is_accepted_and_its_repeat_is_idempotent(db: Db) {
    let Some(fx) = Fx::start(db, "submission_accepted_and_idempotent").await else {
        return;
    };
    let msisdn = random_msisdn();
    fx.s.active_subscriber(&msisdn, PIN).await;
    let m = fx.signed(&msisdn, "small", "EUR25.00", "POS-7-000123");
    let xml = m.to_xml();
    let before = request_count(&fx.s);
    let t0 = fx.now();
    let (st, ct, sub) = fx.submit(&xml).await;
    assert_eq!((st, ct.as_str()), (202, "application/json"), "{sub}");
    let id = sub["request_id"].as_str().unwrap().to_string();
    assert!(!id.is_empty());
    assert_eq!(sub["status"], "pending_authorization");
    let expires = rfc3339(sub["expires_at"].as_str().unwrap());
    let ttl = (expires - t0).whole_seconds();
    assert!(
        (115..=125).contains(&ttl),
        "expires_at {expires} is not ~120 s after {t0}"
    );
    let code = sub["verification_code"].as_str().unwrap().to_string();
    assert!(!code.is_empty());
    assert_eq!(sub["status_url"], format!("/v1/fsp/requests/{id}"));
    assert_eq!(request_count(&fx.s), before + 1);

    // The same bytes again: 200, the same request, nothing new.
    let (st, _, again) = fx.submit(&xml).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["request_id"], id.as_str());
    assert_eq!(again["verification_code"], code.as_str());
    assert_eq!(again["status"], "pending_authorization");
    assert_eq!(request_count(&fx.s), before + 1);
    assert_eq!(request_events(&fx.s, &id, "request.received"), 1);
    fx.finish().await;
}
on_both_backends_async!(
    submission_is_accepted_and_its_repeat_is_idempotent,
    submission_is_accepted_and_its_repeat_is_idempotent
);

/// The handset lists the pending request and its detail shows exactly
/// what will be signed: `dtbs_sha256` of C, payee, amount, the code.
async fn handset_is_shown_exactly_what_will_be_signed(db: Db) {
    let Some(fx) = Fx::start(db, "handset_shown_what_will_be_signed").await else {
        return;
    };
    let Submitted { h, m, sub, id, .. } = submitted(&fx).await;
    let code = sub["verification_code"].as_str().unwrap().to_string();
    let (st, _, list) = fx.handset_get(&h, "/v1/handset/requests").await;
    assert_eq!(st, 200, "{list}");
    let listed: Vec<&str> = list["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    assert_eq!(listed, vec![id.as_str()], "{list}");

    let d = fx.detail(&h, &id).await;
    assert_eq!(d["request_id"], id.as_str());
    let dtbs = dtbs_of(&m.canonical_c().unwrap());
    assert_eq!(
        d["dtbs_sha256"],
        dtbs.as_str(),
        "dtbs_sha256 must be b64url(SHA-256(C))"
    );
    assert_eq!(d["verification_code"], code.as_str());
    assert_eq!(d["expires_at"], sub["expires_at"]);
    assert_eq!(d["display"]["payee"], MERCHANT);
    assert_eq!(d["display"]["amount"], "EUR25.00");
    assert_eq!(d["display"]["currency"], "EUR");
    let nonce = d["nonce"].as_str().unwrap().to_string();
    assert!(!nonce.is_empty());
    fx.finish().await;
}
on_both_backends_async!(
    handset_is_shown_exactly_what_will_be_signed,
    handset_is_shown_exactly_what_will_be_signed
);

/// `display_sig`: the display key (chained to the tmcs CA) over the exact
/// `tmcs-display-v1` string of CONTRACT §7.
async fn display_sig_covers_the_contracts_display_text(db: Db) {
    let Some(fx) = Fx::start(db, "display_sig_covers_display_text").await else {
        return;
    };
    let Submitted { h, m, sub, id, .. } = submitted(&fx).await;
    let code = sub["verification_code"].as_str().unwrap().to_string();
    let dtbs = dtbs_of(&m.canonical_c().unwrap());
    let d = fx.detail(&h, &id).await;
    let display_pem = fetch_text(&fx.s, "/pki/display.pem").await;
    let issuing = write_pem(&fx.env, "issuing.pem", &fx.s.app.svc.pki.issuing.info.pem);
    let display_file = write_pem(&fx.env, "display.pem", &display_pem);
    let (ok, out) = openssl_bg(vec![
        "verify".into(),
        "-CAfile".into(),
        path_str(&fx.env.ca()).into(),
        "-untrusted".into(),
        path_str(&issuing).into(),
        path_str(&display_file).into(),
    ])
    .await;
    assert!(
        ok,
        "the display certificate must chain to the tmcs CA: {out}"
    );
    let display_text = format!(
        "tmcs-display-v1\nrequest_id:{id}\npayee:{MERCHANT}\namount:EUR25.00\nverification_code:{code}\ndtbs_sha256:{dtbs}\nexpires_at:{}\n",
        sub["expires_at"].as_str().unwrap()
    );
    let display_sig = unb64(d["display_sig"].as_str().unwrap());
    assert_signature(&fx.env, &display_pem, display_text.as_bytes(), &display_sig).await;
    fx.finish().await;
}
on_both_backends_async!(
    display_sig_covers_the_contracts_display_text,
    display_sig_covers_the_contracts_display_text
);

/// Authorising signs exactly C with the subscriber's key; the FSP gets the
/// fully signed iMS; the request is no longer pending, and the same message
/// again names the same (now signed) request.
async fn authorising_signs_exactly_c_and_the_fsp_gets_the_signed_ims(db: Db) {
    let Some(fx) = Fx::start(db, "authorising_signs_exactly_c").await else {
        return;
    };
    let before = request_count(&fx.s);
    let Submitted {
        h,
        cert: sub_cert,
        m,
        id,
        ..
    } = submitted(&fx).await;
    let (xml, c) = (m.to_xml(), m.canonical_c().unwrap());
    let d = fx.detail(&h, &id).await;
    let (nonce, dtbs) = (d["nonce"].as_str().unwrap(), dtbs_of(&c));
    let block = h.auth_pin_block(&id, nonce, &dtbs, PIN).unwrap();
    let (st, _, signed) = fx.authorize_block(&h, &id, &block).await;
    assert_eq!(st, 200, "{signed}");
    assert_eq!(signed["status"], "signed");
    assert_eq!(signed["request_id"], id.as_str());
    let sig = unb64(signed["signature"].as_str().unwrap());
    assert_signature(&fx.env, &sub_cert, &c, &sig).await;

    // The FSP gets the fully signed iMS; from/sign is that signature.
    let v = fx.fsp_view(&id).await;
    assert_eq!(v["status"], "signed", "{v}");
    let out = ImsMessage::parse(v["ims"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(out.from_sign.as_deref(), Some(sig.as_slice()));
    assert_eq!(
        out.canonical_c().unwrap(),
        c,
        "the signed iMS must carry the same C"
    );
    assert_eq!(out.to_sign, m.to_sign);
    assert_eq!(out.fsp_sign, m.fsp_sign);

    // No longer pending for the handset.
    let (st, _, list) = fx.handset_get(&h, "/v1/handset/requests").await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["requests"], json!([]), "{list}");
    let r = fx
        .handset_get(&h, &format!("/v1/handset/requests/{id}"))
        .await;
    problem(&r, 409, "request.not_pending");
    // The same message once more still names the same (now signed) request.
    let (st, _, again) = fx.submit(&xml).await;
    assert_eq!(
        (st, again["request_id"].as_str()),
        (200, Some(id.as_str())),
        "{again}"
    );
    assert_eq!(again["status"], "signed");
    assert_eq!(request_count(&fx.s), before + 1);
    assert_eq!(request_events(&fx.s, &id, "request.signed"), 1);
    fx.finish().await;
}
on_both_backends_async!(
    authorising_signs_exactly_c_and_the_fsp_gets_the_signed_ims,
    authorising_signs_exactly_c_and_the_fsp_gets_the_signed_ims
);

// ---------------------------------------------------------------------------
// Exactly one signature

/// Eight authorisations of one request with the right PIN block, each on its
/// own connection (TLS handshake done beforehand) so that they really
/// overlap on the server.
async fn authorise_concurrently(
    fx: &Fx,
    h: &Handset,
    id: &str,
    nonce: &str,
    dtbs: &str,
) -> Vec<Reply> {
    let path = format!("/v1/handset/requests/{id}/authorize");
    let mut clients = Vec::new();
    for _ in 0..8 {
        let c = fx.s.anonymous();
        let res = c.get(fx.s.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        clients.push(c);
    }
    let calls: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let block = h.auth_pin_block(id, nonce, dtbs, PIN).unwrap();
            let hdr = h
                .device_header("POST", &path, fx.env.now().unix_timestamp())
                .unwrap();
            let url = fx.s.url(&path);
            async move {
                let res = client
                    .post(url)
                    .insert_header(("authorization", hdr))
                    .send_json(&json!({ "pin_block": block }))
                    .await
                    .unwrap();
                json_of(res).await
            }
        })
        .collect();
    futures_util::future::join_all(calls).await
}

/// Of eight concurrent authorisations exactly one signs; the others, and
/// any later one, are `request.not_pending` and change nothing.
async fn concurrent_authorisations_sign_exactly_once(db: Db) {
    let Some(fx) = Fx::start(db, "concurrent_authorisations_sign_once").await else {
        return;
    };
    let msisdn = random_msisdn();
    let (h, sub_cert) = fx.s.active_subscriber(&msisdn, PIN).await;
    let m = fx.signed(&msisdn, "medium", "EUR250.00", "POS-8-000001");
    let c = m.canonical_c().unwrap();
    let id = fx.submit_ok(&m).await;
    let d = fx.detail(&h, &id).await;
    let (nonce, dtbs) = (
        d["nonce"].as_str().unwrap(),
        d["dtbs_sha256"].as_str().unwrap(),
    );
    let replies = authorise_concurrently(&fx, &h, &id, nonce, dtbs).await;
    let ok: Vec<&Reply> = replies.iter().filter(|r| r.0 == 200).collect();
    assert_eq!(
        ok.len(),
        1,
        "exactly one authorisation may win: {replies:?}"
    );
    for r in replies.iter().filter(|r| r.0 != 200) {
        problem(r, 409, "request.not_pending");
    }
    let sig_b64 = ok[0].2["signature"].as_str().unwrap();
    assert_signature(&fx.env, &sub_cert, &c, &unb64(sig_b64)).await;
    let row = stored(&fx.s, &id);
    assert_eq!(row.status.as_str(), "signed");
    assert_eq!(row.signature_b64.as_deref(), Some(sig_b64));
    assert_eq!(request_events(&fx.s, &id, "request.signed"), 1);
    assert_eq!(request_events(&fx.s, &id, "request.authorized"), 1);

    // Later: refused, and nothing changes.
    let block = h.auth_pin_block(&id, nonce, dtbs, PIN).unwrap();
    let r = fx.authorize_block(&h, &id, &block).await;
    problem(&r, 409, "request.not_pending");
    let after = stored(&fx.s, &id);
    assert_eq!(
        (after.status.as_str(), after.signature_b64.as_deref()),
        ("signed", Some(sig_b64))
    );
    assert_eq!(request_events(&fx.s, &id, "request.signed"), 1);
    fx.finish().await;
}
on_both_backends_async!(
    concurrent_authorisations_sign_exactly_once,
    concurrent_authorisations_sign_exactly_once
);

// ---------------------------------------------------------------------------
// Person to person (CONTRACT §5: the payee may be a person)

/// A person or `tel:` payee has no certificate, so the calling FSP signs M
/// for it (the merchant's key there is refused); the payer signs C as usual.
async fn p2p_payee_without_certificate_is_signed_for_by_the_fsp(db: Db) {
    let Some(fx) = Fx::start(db, "p2p_payee_signed_for_by_fsp").await else {
        return;
    };
    let msisdn = random_msisdn();
    let (h, sub_cert) = fx.s.active_subscriber(&msisdn, PIN).await;
    for payee in [
        format!("tel:{}", random_msisdn()),
        "Ann.Friend@person.xbank".to_string(),
    ] {
        let mut m = fx.ims(&msisdn, "small", "EUR12.50", &unique("P2P-"));
        m.to = PartyId::parse(&payee).unwrap();
        // Signed by the merchant's key instead of the FSP's: refused.
        sign_with(&mut m, &fx.merchant.key, &fx.fsp.key);
        fx.refused(&m.to_xml(), 400, "ims.bad_signature").await;
        sign_with(&mut m, &fx.fsp.key, &fx.fsp.key);
        let id = fx.submit_ok(&m).await;
        let r = fx.authorize(&h, &id, PIN).await;
        assert_eq!(r.0, 200, "{}", r.2);
        let sig = unb64(r.2["signature"].as_str().unwrap());
        assert_signature(&fx.env, &sub_cert, &m.canonical_c().unwrap(), &sig).await;
    }
    fx.finish().await;
}
on_both_backends_async!(
    p2p_payee_without_certificate_is_signed_for_by_the_fsp,
    p2p_payee_without_certificate_is_signed_for_by_the_fsp
);

/// A payment whose payee is the payer itself is refused.
async fn p2p_paying_oneself_is_refused(db: Db) {
    let Some(fx) = Fx::start(db, "p2p_paying_oneself").await else {
        return;
    };
    let msisdn = random_msisdn();
    fx.s.active_subscriber(&msisdn, PIN).await;
    let mut m = fx.ims(&msisdn, "small", "EUR1.00", &unique("SELF-"));
    m.to = m.from.clone();
    sign_with(&mut m, &fx.fsp.key, &fx.fsp.key);
    fx.refused(&m.to_xml(), 400, "ims.unknown_party").await;
    fx.finish().await;
}
on_both_backends_async!(p2p_paying_oneself_is_refused, p2p_paying_oneself_is_refused);

/// A payer named by its person alias (`name@person.domain`) is that
/// subscriber; registered but not activated, it has no certificate yet.
async fn p2p_payer_alias_names_a_not_yet_active_subscriber(db: Db) {
    let Some(fx) = Fx::start(db, "p2p_payer_alias").await else {
        return;
    };
    let (st, _, b) = post_json(
        &fx.s.as_client("operator"),
        &fx.s.url("/v1/admin/subscribers"),
        &json!({ "msisdn": random_msisdn(), "display_name": "J B", "kyc_ref": "K", "party_id": "John.Bernard@person.xbank" }),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let mut m = fx.ims(&random_msisdn(), "small", "EUR2.00", &unique("ALIAS-"));
    m.from = PartyId::parse("John.Bernard@person.xbank").unwrap();
    fx.sign(&mut m);
    // Registered but not activated: no certificate to sign with yet.
    fx.refused(&m.to_xml(), 409, "subscriber.not_active").await;
    fx.finish().await;
}
on_both_backends_async!(
    p2p_payer_alias_names_a_not_yet_active_subscriber,
    p2p_payer_alias_names_a_not_yet_active_subscriber
);
