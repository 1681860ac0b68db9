//! Authorisations that are refused, and the other ends of a request
//! (CONTRACT §7 handset and gateway API, with the problem codes of §4 and the
//! FSP's view of §6): wrong PINs until blocked, a PIN block bound to another
//! nonce, digest or request (`sad.mismatch`, no attempt used), another
//! subscriber's handset, decline, the gateway (tier `small` only, and only
//! the named subscriber's requests), and expiry (refused at once, recorded
//! by the sweeper, named on resubmission). Every refusal leaves the request
//! unsigned.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;
use tmcs_client::Handset;

use super::{
    assert_signature, dtbs_of, problem, request_count, request_events, stored, unb64, Fx, PIN,
    PROBLEM,
};
use crate::on_both_backends_async;
use crate::support::{get_json, post_json, random_msisdn, Db};

/// A PIN block of the right PIN for request `id`, as its detail says.
async fn right_block(fx: &Fx, h: &Handset, id: &str) -> String {
    let d = fx.detail(h, id).await;
    h.auth_pin_block(
        id,
        d["nonce"].as_str().unwrap(),
        d["dtbs_sha256"].as_str().unwrap(),
        PIN,
    )
    .unwrap()
}

// ---------------------------------------------------------------------------
// The PIN

/// Two wrong PINs say how many attempts are left, the third blocks; then
/// the right PIN is refused too, nothing is signed, and the operator sees
/// the subscriber blocked.
async fn wrong_pins_block_then_the_right_pin_is_refused(db: Db) {
    let Some(fx) = Fx::start(db, "wrong_pins_block").await else {
        return;
    };
    let op = fx.s.as_client("operator");
    let a = random_msisdn();
    let (ha, _) = fx.s.active_subscriber(&a, PIN).await;
    let id = fx
        .submit_ok(&fx.signed(&a, "small", "EUR25.00", "R-pin"))
        .await;
    for left in [2, 1] {
        let r = fx.authorize(&ha, &id, "739152").await;
        problem(&r, 403, "pin.wrong");
        assert_eq!(r.2["attempts_left"], left, "{}", r.2);
        assert_eq!(stored(&fx.s, &id).status.as_str(), "pending_authorization");
    }
    let r = fx.authorize(&ha, &id, "739152").await;
    problem(&r, 403, "pin.blocked");
    let r = fx.authorize(&ha, &id, PIN).await;
    problem(&r, 403, "pin.blocked");
    let row = stored(&fx.s, &id);
    assert_eq!(
        (row.status.as_str(), row.signature_b64.as_deref()),
        ("pending_authorization", None)
    );
    assert_eq!(request_events(&fx.s, &id, "request.signed"), 0);
    let (st, _, view) = get_json(&op, &fx.s.url(&format!("/v1/admin/subscribers/{a}"))).await;
    assert_eq!(
        (st, view["state"].as_str()),
        (200, Some("blocked")),
        "{view}"
    );
    fx.finish().await;
}
on_both_backends_async!(
    wrong_pins_block_then_the_right_pin_is_refused,
    wrong_pins_block_then_the_right_pin_is_refused
);

/// A PIN blocked by wrong PINs also stops new submissions for that payer.
async fn blocked_pin_also_refuses_new_submissions(db: Db) {
    let Some(fx) = Fx::start(db, "blocked_pin_refuses_submissions").await else {
        return;
    };
    let a = random_msisdn();
    let (ha, _) = fx.s.active_subscriber(&a, PIN).await;
    let id = fx
        .submit_ok(&fx.signed(&a, "small", "EUR25.00", "R-pin"))
        .await;
    for _ in 0..2 {
        let r = fx.authorize(&ha, &id, "739152").await;
        problem(&r, 403, "pin.wrong");
    }
    let r = fx.authorize(&ha, &id, "739152").await;
    problem(&r, 403, "pin.blocked");
    let m = fx.signed(&a, "small", "EUR25.00", "R-pin2");
    let before = request_count(&fx.s);
    let r = fx.submit(&m.to_xml()).await;
    assert!(
        matches!(
            r.2["code"].as_str(),
            Some("subscriber.blocked" | "pin.blocked")
        ),
        "{r:?}"
    );
    assert_eq!((r.0, r.1.as_str()), (403, PROBLEM));
    fx.assert_count(before);
    fx.finish().await;
}
on_both_backends_async!(
    blocked_pin_also_refuses_new_submissions,
    blocked_pin_also_refuses_new_submissions
);

/// A PIN block for another nonce, digest or request: `sad.mismatch`, no PIN
/// attempt used; the right one signs C afterwards, and works only once.
async fn sad_mismatch_uses_no_attempt(db: Db) {
    let Some(fx) = Fx::start(db, "sad_mismatch_uses_no_attempt").await else {
        return;
    };
    let op = fx.s.as_client("operator");
    let b = random_msisdn();
    let (hb, cert_b) = fx.s.active_subscriber(&b, PIN).await;
    let mb = fx.signed(&b, "small", "EUR25.00", "R-nonce");
    let id = fx.submit_ok(&mb).await;
    let d = fx.detail(&hb, &id).await;
    let (nonce, dtbs) = (
        d["nonce"].as_str().unwrap(),
        d["dtbs_sha256"].as_str().unwrap(),
    );
    let other_nonce = URL_SAFE_NO_PAD.encode([7u8; 16]);
    assert_ne!(other_nonce, nonce);
    let other_dtbs = dtbs_of(b"something else");
    for block in [
        hb.auth_pin_block(&id, &other_nonce, dtbs, PIN).unwrap(),
        hb.auth_pin_block(&id, nonce, &other_dtbs, PIN).unwrap(),
        hb.auth_pin_block("00000000-0000-4000-8000-000000000000", nonce, dtbs, PIN)
            .unwrap(),
    ] {
        let r = fx.authorize_block(&hb, &id, &block).await;
        problem(&r, 403, "sad.mismatch");
        assert_eq!(stored(&fx.s, &id).status.as_str(), "pending_authorization");
    }
    let (_, _, view) = get_json(&op, &fx.s.url(&format!("/v1/admin/subscribers/{b}"))).await;
    assert_eq!(
        view["attempts_left"], 3,
        "a mismatch must not cost a PIN attempt: {view}"
    );
    let block = hb.auth_pin_block(&id, nonce, dtbs, PIN).unwrap();
    let (st, _, signed) = fx.authorize_block(&hb, &id, &block).await;
    assert_eq!(
        (st, signed["status"].as_str()),
        (200, Some("signed")),
        "{signed}"
    );
    let sig = unb64(signed["signature"].as_str().unwrap());
    assert_signature(&fx.env, &cert_b, &mb.canonical_c().unwrap(), &sig).await;
    // The nonce works once.
    let r = fx.authorize_block(&hb, &id, &block).await;
    problem(&r, 409, "request.not_pending");
    fx.finish().await;
}
on_both_backends_async!(sad_mismatch_uses_no_attempt, sad_mismatch_uses_no_attempt);

// ---------------------------------------------------------------------------
// Whose request it is

/// Another subscriber's handset can neither see, authorise nor decline the
/// request (`request.not_found`), and does not list it.
async fn another_handset_can_neither_see_nor_authorise(db: Db) {
    let Some(fx) = Fx::start(db, "another_handset_cannot_authorise").await else {
        return;
    };
    let b = random_msisdn();
    let (hb, _) = fx.s.active_subscriber(&b, PIN).await;
    let intruder = random_msisdn();
    let (hi, _) = fx.s.active_subscriber(&intruder, PIN).await;
    let id_b = fx
        .submit_ok(&fx.signed(&b, "small", "EUR25.00", "R-foreign"))
        .await;
    let d = fx.detail(&hb, &id_b).await;
    let r = fx
        .handset_get(&hi, &format!("/v1/handset/requests/{id_b}"))
        .await;
    problem(&r, 404, "request.not_found");
    let foreign = hi
        .auth_pin_block(
            &id_b,
            d["nonce"].as_str().unwrap(),
            d["dtbs_sha256"].as_str().unwrap(),
            PIN,
        )
        .unwrap();
    let r = fx.authorize_block(&hi, &id_b, &foreign).await;
    problem(&r, 404, "request.not_found");
    let r = fx
        .handset_post(
            &hi,
            &format!("/v1/handset/requests/{id_b}/decline"),
            &json!({}),
        )
        .await;
    problem(&r, 404, "request.not_found");
    assert_eq!(
        stored(&fx.s, &id_b).status.as_str(),
        "pending_authorization"
    );
    let (st, _, list) = fx.handset_get(&hi, "/v1/handset/requests").await;
    assert_eq!((st, &list["requests"]), (200, &json!([])), "{list}");
    fx.finish().await;
}
on_both_backends_async!(
    another_handset_can_neither_see_nor_authorise,
    another_handset_can_neither_see_nor_authorise
);

/// Declined: the FSP sees `declined`, and the right PIN block afterwards is
/// `request.not_pending` with nothing signed.
async fn declined_request_cannot_be_authorised(db: Db) {
    let Some(fx) = Fx::start(db, "declined_request").await else {
        return;
    };
    let b = random_msisdn();
    let (hb, _) = fx.s.active_subscriber(&b, PIN).await;
    let id = fx
        .submit_ok(&fx.signed(&b, "small", "EUR25.00", "R-decline"))
        .await;
    let block = right_block(&fx, &hb, &id).await;
    let (st, _, dec) = fx
        .handset_post(
            &hb,
            &format!("/v1/handset/requests/{id}/decline"),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200, "{dec}");
    assert_eq!(fx.fsp_view(&id).await["status"], "declined");
    let r = fx.authorize_block(&hb, &id, &block).await;
    problem(&r, 409, "request.not_pending");
    let row = stored(&fx.s, &id);
    assert_eq!(
        (row.status.as_str(), row.signature_b64.as_deref()),
        ("declined", None)
    );
    fx.finish().await;
}
on_both_backends_async!(
    declined_request_cannot_be_authorised,
    declined_request_cannot_be_authorised
);

// ---------------------------------------------------------------------------
// The gateway (no app, tier small only)

/// A `medium` request through the gateway: `auth.forbidden`, unsigned; a
/// `small` one is signed over exactly C and the FSP sees it signed.
async fn gateway_only_small(db: Db) {
    let Some(fx) = Fx::start(db, "gateway_only_small").await else {
        return;
    };
    let g = random_msisdn();
    let (_, cert_g) = fx.s.active_subscriber(&g, PIN).await;
    let gw = fx.s.as_client("gateway-demo");
    let medium = fx
        .submit_ok(&fx.signed(&g, "medium", "EUR250.00", "R-gw-medium"))
        .await;
    let (st, ct, b2) = post_json(
        &gw,
        &fx.s.url("/v1/gateway/authorize"),
        &json!({ "msisdn": g, "request_id": medium, "pin": PIN }),
    )
    .await;
    problem(&(st, ct, b2), 403, "auth.forbidden");
    assert_eq!(
        stored(&fx.s, &medium).status.as_str(),
        "pending_authorization"
    );
    assert_eq!(request_events(&fx.s, &medium, "request.signed"), 0);
    let small_msg = fx.signed(&g, "small", "EUR25.00", "R-gw-small");
    let small = fx.submit_ok(&small_msg).await;
    let (st, _, signed) = post_json(
        &gw,
        &fx.s.url("/v1/gateway/authorize"),
        &json!({ "msisdn": g, "request_id": small, "pin": PIN }),
    )
    .await;
    assert_eq!(st, 200, "{signed}");
    assert_eq!(
        (signed["status"].as_str(), signed["request_id"].as_str()),
        (Some("signed"), Some(small.as_str()))
    );
    let sig = unb64(signed["signature"].as_str().unwrap());
    assert_signature(&fx.env, &cert_g, &small_msg.canonical_c().unwrap(), &sig).await;
    assert_eq!(fx.fsp_view(&small).await["status"], "signed");
    fx.finish().await;
}
on_both_backends_async!(gateway_only_small, gateway_only_small);

/// The gateway naming another subscriber's number does not reach the
/// request (`request.not_found`, still pending); the payer's own number does.
async fn gateway_naming_another_subscriber_is_not_found(db: Db) {
    let Some(fx) = Fx::start(db, "gateway_naming_another_subscriber").await else {
        return;
    };
    let (g, b) = (random_msisdn(), random_msisdn());
    fx.s.active_subscriber(&g, PIN).await;
    fx.s.active_subscriber(&b, PIN).await;
    let gw = fx.s.as_client("gateway-demo");
    let small = fx
        .submit_ok(&fx.signed(&g, "small", "EUR25.00", "R-gw-small"))
        .await;
    let r = post_json(
        &gw,
        &fx.s.url("/v1/gateway/authorize"),
        &json!({ "msisdn": b, "request_id": small, "pin": PIN }),
    )
    .await;
    problem(&r, 404, "request.not_found");
    assert_eq!(
        stored(&fx.s, &small).status.as_str(),
        "pending_authorization"
    );
    let (st, _, signed) = post_json(
        &gw,
        &fx.s.url("/v1/gateway/authorize"),
        &json!({ "msisdn": g, "request_id": small, "pin": PIN }),
    )
    .await;
    assert_eq!(
        (st, signed["status"].as_str()),
        (200, Some("signed")),
        "{signed}"
    );
    fx.finish().await;
}
on_both_backends_async!(
    gateway_naming_another_subscriber_is_not_found,
    gateway_naming_another_subscriber_is_not_found
);

// ---------------------------------------------------------------------------
// Expiry

/// After `request_ttl_seconds` the right PIN block is `request.expired` and
/// the FSP sees `expired`; reads and refusals never write expiry, the
/// sweeper records it (here for two overdue requests), nothing is signed.
async fn expired_request_is_refused_and_swept(db: Db) {
    let Some(fx) = Fx::start(db, "expired_request_refused_and_swept").await else {
        return;
    };
    let b = random_msisdn();
    let (hb, _) = fx.s.active_subscriber(&b, PIN).await;
    let id = fx
        .submit_ok(&fx.signed(&b, "small", "EUR25.00", "R-expire"))
        .await;
    let block = right_block(&fx, &hb, &id).await;
    // A second overdue request, never looked at.
    fx.submit_ok(&fx.signed(&b, "small", "EUR25.00", "R-expire-2"))
        .await;
    fx.env.clock.advance(time::Duration::seconds(121));
    let r = fx.authorize_block(&hb, &id, &block).await;
    problem(&r, 409, "request.expired");
    assert_eq!(fx.fsp_view(&id).await["status"], "expired");
    // Reads and refusals never write expiry; the sweeper records it.
    assert_eq!(stored(&fx.s, &id).status.as_str(), "pending_authorization");
    assert!(tmcs::signing::expire_overdue(&fx.s.app.svc).unwrap() >= 2);
    let row = stored(&fx.s, &id);
    assert_eq!(
        (row.status.as_str(), row.signature_b64.as_deref()),
        ("expired", None)
    );
    assert_eq!(request_events(&fx.s, &id, "request.expired"), 1);
    assert_eq!(request_events(&fx.s, &id, "request.signed"), 0);
    fx.finish().await;
}
on_both_backends_async!(
    expired_request_is_refused_and_swept,
    expired_request_is_refused_and_swept
);

/// The same message again after it expired (its timestamp still within the
/// allowed skew) names the same request and says it expired; nothing new.
async fn expired_message_resubmitted_names_the_expired_request(db: Db) {
    let Some(fx) = Fx::start(db, "expired_message_resubmitted").await else {
        return;
    };
    let b = random_msisdn();
    fx.s.active_subscriber(&b, PIN).await;
    let late = fx.signed(&b, "small", "EUR25.00", "R-expire-2");
    let late_id = fx.submit_ok(&late).await;
    fx.env.clock.advance(time::Duration::seconds(121));
    assert!(tmcs::signing::expire_overdue(&fx.s.app.svc).unwrap() >= 1);
    let before = request_count(&fx.s);
    let (st, _, again) = fx.submit(&late.to_xml()).await;
    assert_eq!(
        (st, again["request_id"].as_str()),
        (200, Some(late_id.as_str())),
        "{again}"
    );
    assert_eq!(again["status"], "expired", "{again}");
    fx.assert_count(before);
    assert_eq!(fx.fsp_view(&late_id).await["status"], "expired");
    fx.finish().await;
}
on_both_backends_async!(
    expired_message_resubmitted_names_the_expired_request,
    expired_message_resubmitted_names_the_expired_request
);
