//! Submissions that are refused (CONTRACT §5 the iMS, §6 `POST
//! /v1/fsp/messages`, with the problem codes of §4): a changed or mis-tiered
//! message, a stale timestamp, a replayed reference, signatures by unknown
//! or wrong keys, XML entities, oversized bodies, an unconfigured currency,
//! the wrong media type or caller, an unknown payer, and the limits; then the
//! payer's and the merchant's state (a blocked payer, a suspended or revoked
//! certificate, a suspended merchant). Every refusal is an RFC 9457 problem,
//! leaves no request behind and, when the domain decided it, is audited with
//! its code (`Fx::refused`).

use openssl::pkey::{PKey, Private};
use serde_json::json;
use tmcs::ims::{Money, PartyId};

use super::{
    problem, register_party, request_count, sign_with, stored, submit_raw, Fx, MERCHANT, PIN,
    PROBLEM,
};
use crate::on_both_backends_async;
use crate::support::{get_json, post_json, random_msisdn, Db};

/// A fixture with one active payer; its MSISDN.
async fn with_payer(db: Db, test: &str) -> Option<(Fx, String)> {
    let fx = Fx::start(db, test).await?;
    let msisdn = random_msisdn();
    let (_h, _) = fx.s.active_subscriber(&msisdn, PIN).await;
    Some((fx, msisdn))
}

/// A key whose certificate tmcs has never seen.
fn stranger_key() -> PKey<Private> {
    let stranger = rcgen::KeyPair::generate().unwrap();
    PKey::private_key_from_pem(stranger.serialize_pem().as_bytes()).unwrap()
}

// ---------------------------------------------------------------------------
// The message itself

/// The amount changed after both signed: `ims.bad_signature`.
async fn amount_changed_after_signing_is_a_bad_signature(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "amount_changed_after_signing").await else {
        return;
    };
    let mut m = fx.signed(&msisdn, "small", "EUR25.00", "R-badsig");
    m.amount = Money::parse("EUR26.00").unwrap();
    fx.refused(&m.to_xml(), 400, "ims.bad_signature").await;
    fx.finish().await;
}
on_both_backends_async!(
    amount_changed_after_signing_is_a_bad_signature,
    amount_changed_after_signing_is_a_bad_signature
);

/// A type that is not the amount's tier (correctly signed): `ims.tier_mismatch`.
async fn type_other_than_the_amounts_tier_is_refused(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "type_other_than_tier").await else {
        return;
    };
    let m = fx.signed(&msisdn, "medium", "EUR25.00", "R-tier");
    fx.refused(&m.to_xml(), 400, "ims.tier_mismatch").await;
    let m = fx.signed(&msisdn, "small", "EUR250.00", "R-tier2");
    fx.refused(&m.to_xml(), 400, "ims.tier_mismatch").await;
    fx.finish().await;
}
on_both_backends_async!(
    type_other_than_the_amounts_tier_is_refused,
    type_other_than_the_amounts_tier_is_refused
);

/// Two hours old, and two hours ahead: `ims.stale`.
async fn stale_or_future_timestamp_is_refused(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "stale_or_future_timestamp").await else {
        return;
    };
    for (r, shift) in [("R-stale", -2), ("R-future", 2)] {
        let mut m = fx.ims(&msisdn, "small", "EUR25.00", r);
        m.timestamp += time::Duration::hours(shift);
        fx.sign(&mut m);
        fx.refused(&m.to_xml(), 400, "ims.stale").await;
    }
    fx.finish().await;
}
on_both_backends_async!(
    stale_or_future_timestamp_is_refused,
    stale_or_future_timestamp_is_refused
);

/// Another message (new amount, or the same content re-signed) with the
/// same (to.id, ref): `ims.replay`, and the first request stays pending.
async fn another_message_with_the_same_reference_is_a_replay(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "same_reference_is_a_replay").await else {
        return;
    };
    let first = fx.signed(&msisdn, "small", "EUR25.00", "R-replay");
    let first_id = fx.submit_ok(&first).await;
    let second = fx.signed(&msisdn, "small", "EUR30.00", "R-replay");
    fx.refused(&second.to_xml(), 409, "ims.replay").await;
    // Even the same content re-signed (new ECDSA signatures) is another message.
    let mut resigned = first.clone();
    fx.sign(&mut resigned);
    assert_ne!(resigned.to_sign, first.to_sign);
    fx.refused(&resigned.to_xml(), 409, "ims.replay").await;
    assert_eq!(
        stored(&fx.s, &first_id).status.as_str(),
        "pending_authorization"
    );
    fx.finish().await;
}
on_both_backends_async!(
    another_message_with_the_same_reference_is_a_replay,
    another_message_with_the_same_reference_is_a_replay
);

// ---------------------------------------------------------------------------
// Who signed it

/// A merchant whose certificate tmcs does not know: `ims.unknown_party`; a
/// known merchant id signed by a key that is not its certificate's:
/// `ims.bad_signature`.
async fn unknown_merchant_or_a_key_not_its_certificates_is_refused(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "unknown_merchant_or_wrong_key").await else {
        return;
    };
    let stranger = stranger_key();
    let mut m = fx.ims(&msisdn, "small", "EUR25.00", "R-unknown");
    m.to = PartyId::parse("Unknown.Shop@merchant.xbank").unwrap();
    sign_with(&mut m, &stranger, &fx.fsp.key);
    fx.refused(&m.to_xml(), 400, "ims.unknown_party").await;
    // A known merchant id signed by a key that is not its certificate's.
    let mut m = fx.ims(&msisdn, "small", "EUR25.00", "R-wrongkey");
    sign_with(&mut m, &stranger, &fx.fsp.key);
    fx.refused(&m.to_xml(), 400, "ims.bad_signature").await;
    fx.finish().await;
}
on_both_backends_async!(
    unknown_merchant_or_a_key_not_its_certificates_is_refused,
    unknown_merchant_or_a_key_not_its_certificates_is_refused
);

/// F signed by another FSP's (registered!) key, or by a key nobody
/// registered, and submitted by Demo.FSP: `ims.bad_signature`.
async fn f_not_signed_by_the_submitting_fsp_is_refused(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "f_not_signed_by_submitting_fsp").await else {
        return;
    };
    let other = register_party(&fx.s, "Other.FSP@fsp.xbank", "fsp").await;
    let mut m = fx.ims(&msisdn, "small", "EUR25.00", "R-otherfsp");
    sign_with(&mut m, &fx.merchant.key, &other.key);
    fx.refused(&m.to_xml(), 400, "ims.bad_signature").await;
    // ... F by a key nobody registered.
    let mut m = fx.ims(&msisdn, "small", "EUR25.00", "R-strangefsp");
    sign_with(&mut m, &fx.merchant.key, &stranger_key());
    fx.refused(&m.to_xml(), 400, "ims.bad_signature").await;
    fx.finish().await;
}
on_both_backends_async!(
    f_not_signed_by_the_submitting_fsp_is_refused,
    f_not_signed_by_the_submitting_fsp_is_refused
);

/// Another (registered) FSP cannot see Demo.FSP's request: `request.not_found`.
async fn another_fsp_cannot_see_the_request(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "another_fsp_cannot_see").await else {
        return;
    };
    let first_id = fx
        .submit_ok(&fx.signed(&msisdn, "small", "EUR25.00", "R-fsp-only"))
        .await;
    let other = register_party(&fx.s, "Other.FSP@fsp.xbank", "fsp").await;
    let other_client =
        tmcs_client::https::https_client_pem(&fx.env.ca(), &other.cert_pem, &other.key_pem)
            .unwrap();
    let (st, ct, b) = get_json(
        &other_client,
        &fx.s.url(&format!("/v1/fsp/requests/{first_id}")),
    )
    .await;
    problem(&(st, ct, b), 404, "request.not_found");
    fx.finish().await;
}
on_both_backends_async!(
    another_fsp_cannot_see_the_request,
    another_fsp_cannot_see_the_request
);

// ---------------------------------------------------------------------------
// How it arrives

/// A DTD with an external (or internal) entity: `ims.malformed`, nothing
/// read or echoed.
async fn xml_entities_are_refused_and_nothing_is_read_or_echoed(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "xml_entities_refused").await else {
        return;
    };
    let m = fx.signed(&msisdn, "small", "EUR25.00", "R-xxe");
    let xml = m.to_xml().replace(
        "<accountPayable>1234-5678-9abc</accountPayable>",
        "<accountPayable>&x;</accountPayable>",
    );
    assert!(xml.contains("&x;"));
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for doctype in [
        r#"<!DOCTYPE iMS [<!ENTITY x SYSTEM "file:///etc/passwd">]>"#,
        r#"<!DOCTYPE iMS [<!ENTITY x "1234-5678-9abc">]>"#,
    ] {
        let evil = format!("<?xml version=\"1.0\"?>\n{doctype}\n{xml}");
        let r = fx.refused(&evil, 400, "ims.malformed").await;
        let body = r.2.to_string();
        assert!(
            !body.contains("root:") && !body.contains("/etc/passwd"),
            "{body}"
        );
        for line in passwd.lines().filter(|l| l.len() > 8) {
            assert!(!body.contains(line), "{body}");
        }
    }
    fx.finish().await;
}
on_both_backends_async!(
    xml_entities_are_refused_and_nothing_is_read_or_echoed,
    xml_entities_are_refused_and_nothing_is_read_or_echoed
);

/// Oversized bodies (a valid message padded with whitespace) are
/// `payload.too_large`; the limit is 16 KiB: one byte more is refused,
/// exactly 16 KiB (and a charset parameter on the media type) is fine.
async fn bodies_over_16_kib_are_too_large_and_16_kib_is_accepted(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "bodies_over_16_kib").await else {
        return;
    };
    let m = fx.signed(&msisdn, "small", "EUR25.00", "R-big");
    for size in [20 << 10, 200 << 10] {
        let mut big = m.to_xml();
        big.push_str(&" ".repeat(size - big.len()));
        let before = request_count(&fx.s);
        let r = fx.submit(&big).await;
        assert!(r.0 == 413 || r.0 == 400, "{size}: {r:?}");
        problem(&r, r.0, "payload.too_large");
        fx.assert_count(before);
    }
    let mut edge = m.to_xml();
    edge.push_str(&" ".repeat((16 << 10) + 1 - edge.len()));
    let before = request_count(&fx.s);
    let r = fx.submit(&edge).await;
    problem(&r, r.0, "payload.too_large");
    fx.assert_count(before);
    edge.pop();
    let r = submit_raw(
        &fx.s,
        &fx.fsp_client,
        "application/xml; charset=utf-8",
        edge.into_bytes(),
    )
    .await;
    assert_eq!(r.0, 202, "{r:?}");
    assert_eq!(request_count(&fx.s), before + 1);
    fx.finish().await;
}
on_both_backends_async!(
    bodies_over_16_kib_are_too_large_and_16_kib_is_accepted,
    bodies_over_16_kib_are_too_large_and_16_kib_is_accepted
);

/// A currency that is not configured: `ims.currency_unsupported`.
async fn unconfigured_currency_is_refused(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "unconfigured_currency").await else {
        return;
    };
    let m = fx.signed(&msisdn, "small", "JPY500", "R-jpy");
    fx.refused(&m.to_xml(), 400, "ims.currency_unsupported")
        .await;
    fx.finish().await;
}
on_both_backends_async!(
    unconfigured_currency_is_refused,
    unconfigured_currency_is_refused
);

/// A good message sent as anything but `application/xml`: 415
/// `unsupported_media_type`; then accepted as it should be.
async fn good_message_with_another_media_type_is_refused(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "another_media_type").await else {
        return;
    };
    let good = fx.signed(&msisdn, "small", "EUR25.00", "R-good");
    let xml = good.to_xml();
    for ct in [
        "text/plain",
        "application/json",
        "application/x-www-form-urlencoded",
    ] {
        let before = request_count(&fx.s);
        let r = submit_raw(&fx.s, &fx.fsp_client, ct, xml.clone().into_bytes()).await;
        problem(&r, 415, "unsupported_media_type");
        fx.assert_count(before);
    }
    let id = fx.submit_ok(&good).await;
    assert_eq!(stored(&fx.s, &id).status.as_str(), "pending_authorization");
    fx.finish().await;
}
on_both_backends_async!(
    good_message_with_another_media_type_is_refused,
    good_message_with_another_media_type_is_refused
);

/// A good message from the auditor, the operator or a gateway: 403
/// `auth.forbidden`; without a client certificate: 401 or 403; then the
/// FSP's submission is accepted.
async fn only_an_fsp_may_submit(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "only_an_fsp_may_submit").await else {
        return;
    };
    let good = fx.signed(&msisdn, "small", "EUR25.00", "R-good");
    let xml = good.to_xml();
    for client in ["auditor", "operator", "gateway-demo"] {
        let before = request_count(&fx.s);
        let r = submit_raw(
            &fx.s,
            &fx.s.as_client(client),
            "application/xml",
            xml.clone().into_bytes(),
        )
        .await;
        problem(&r, 403, "auth.forbidden");
        fx.assert_count(before);
    }
    let r = submit_raw(
        &fx.s,
        &fx.s.anonymous(),
        "application/xml",
        xml.clone().into_bytes(),
    )
    .await;
    assert!(r.0 == 401 || r.0 == 403, "{r:?}");
    assert_eq!(r.1, PROBLEM);
    let id = fx.submit_ok(&good).await;
    assert_eq!(stored(&fx.s, &id).status.as_str(), "pending_authorization");
    fx.finish().await;
}
on_both_backends_async!(only_an_fsp_may_submit, only_an_fsp_may_submit);

// ---------------------------------------------------------------------------
// The payer and the limits

/// A payer who is not a subscriber: `subscriber.not_found`.
async fn payer_who_is_not_a_subscriber_is_refused(db: Db) {
    let Some(fx) = Fx::start(db, "payer_not_a_subscriber").await else {
        return;
    };
    let m = fx.signed(&random_msisdn(), "small", "EUR25.00", "R-nobody");
    fx.refused(&m.to_xml(), 404, "subscriber.not_found").await;
    fx.finish().await;
}
on_both_backends_async!(
    payer_who_is_not_a_subscriber_is_refused,
    payer_who_is_not_a_subscriber_is_refused
);

/// One payment above `per_payment_max`: `limit.exceeded`.
async fn payment_above_per_payment_max_is_refused(db: Db) {
    let Some((fx, msisdn)) = with_payer(db, "above_per_payment_max").await else {
        return;
    };
    let m = fx.signed(&msisdn, "large", "EUR10000.01", "R-perpay");
    fx.refused(&m.to_xml(), 403, "limit.exceeded").await;
    fx.finish().await;
}
on_both_backends_async!(
    payment_above_per_payment_max_is_refused,
    payment_above_per_payment_max_is_refused
);

/// The day: 10000.00 + 10000.00 reach 20000.00 exactly (allowed), anything
/// more that day is `limit.exceeded`.
async fn daily_limit_is_reached_exactly_then_refused(db: Db) {
    let Some((fx, rich)) = with_payer(db, "daily_limit_reached_exactly").await else {
        return;
    };
    fx.submit_ok(&fx.signed(&rich, "large", "EUR10000.00", "R-day1"))
        .await;
    fx.submit_ok(&fx.signed(&rich, "large", "EUR10000.00", "R-day2"))
        .await;
    let m = fx.signed(&rich, "large", "EUR1000.01", "R-day3");
    fx.refused(&m.to_xml(), 403, "limit.exceeded").await;
    let m = fx.signed(&rich, "small", "EUR0.01", "R-day4");
    fx.refused(&m.to_xml(), 403, "limit.exceeded").await;
    fx.finish().await;
}
on_both_backends_async!(
    daily_limit_is_reached_exactly_then_refused,
    daily_limit_is_reached_exactly_then_refused
);

/// The daily limit is kept as a running total per payer, currency and day
/// (issue #11): a declined request frees its amount, and one made late on a
/// day that expires after midnight frees that day, not the new one, whose
/// limit is whole and stays taken.
async fn daily_limit_frees_declined_and_expired_amounts_on_their_own_day(db: Db) {
    let Some(fx) = Fx::start(db, "daily_limit_frees_on_own_day").await else {
        return;
    };
    let payer = random_msisdn();
    let (h, _) = fx.s.active_subscriber(&payer, PIN).await;
    // 23:59:00 UTC; requests live 120 s.
    let now = fx.now();
    let mut eve = now.replace_time(time::Time::from_hms(23, 59, 0).unwrap());
    if eve < now {
        eve += time::Duration::days(1);
    }
    fx.env.clock.advance(eve - now);
    let pay = |amount: &str, reference: &str| {
        let tier = if amount == "EUR0.01" {
            "small"
        } else {
            "large"
        };
        fx.signed(&payer, tier, amount, reference)
    };
    let a = fx.submit_ok(&pay("EUR10000.00", "R-eve-a")).await;
    fx.submit_ok(&pay("EUR10000.00", "R-eve-b")).await;
    fx.refused(&pay("EUR0.01", "R-eve-c").to_xml(), 403, "limit.exceeded")
        .await;
    let decline = |id: String| {
        let path = format!("/v1/handset/requests/{id}/decline");
        let (fx, h) = (&fx, &h);
        async move {
            let r = fx.handset_post(h, &path, &json!({})).await;
            assert_eq!(r.0, 200, "{}", r.2);
        }
    };
    decline(a.clone()).await;
    fx.submit_ok(&pay("EUR10000.00", "R-eve-d")).await;
    fx.refused(&pay("EUR0.01", "R-eve-e").to_xml(), 403, "limit.exceeded")
        .await;

    // Past midnight and past the evening's requests' expiry.
    fx.env.clock.advance(time::Duration::seconds(121));
    let w = fx.submit_ok(&pay("EUR10000.00", "R-morning-w")).await;
    fx.submit_ok(&pay("EUR10000.00", "R-morning-x")).await;
    assert!(tmcs::signing::expire_overdue(&fx.s.app.svc).unwrap() >= 2);
    fx.refused(
        &pay("EUR0.01", "R-morning-y").to_xml(),
        403,
        "limit.exceeded",
    )
    .await;
    let (evening, morning) = (stored(&fx.s, &a), stored(&fx.s, &w));
    assert_ne!(evening.limit_day, morning.limit_day);
    let total = |day: &str| {
        use tmcs::store::daily_totals::{total, DayKey};
        let key = DayKey {
            subscriber_id: &evening.subscriber_id,
            currency: "EUR",
            day,
        };
        fx.s.app.svc.store.read(|c| total(c, &key)).unwrap()
    };
    assert_eq!(
        (total(&evening.limit_day), total(&morning.limit_day)),
        (0, 2_000_000)
    );
    decline(w).await;
    fx.submit_ok(&pay("EUR10000.00", "R-morning-z")).await;
    fx.finish().await;
}
on_both_backends_async!(
    daily_limit_frees_declined_and_expired_amounts_on_their_own_day,
    daily_limit_frees_declined_and_expired_amounts_on_their_own_day
);

/// Eight submissions of EUR5000.00 for one payer at once: exactly four fit
/// the day's EUR20000.00, the others are `limit.exceeded`.
async fn concurrent_submissions_fill_the_daily_limit_exactly(db: Db) {
    let Some((fx, payer)) = with_payer(db, "concurrent_daily_limit").await else {
        return;
    };
    let xml: Vec<String> = (0..8)
        .map(|i| {
            fx.signed(&payer, "large", "EUR5000.00", &format!("R-race-{i}"))
                .to_xml()
        })
        .collect();
    let replies = futures_util::future::join_all(xml.iter().map(|m| fx.submit(m))).await;
    let accepted = replies.iter().filter(|r| r.0 == 202).count();
    assert_eq!(accepted, 4, "{replies:?}");
    for r in replies.iter().filter(|r| r.0 != 202) {
        problem(r, 403, "limit.exceeded");
    }
    fx.finish().await;
}
on_both_backends_async!(
    concurrent_submissions_fill_the_daily_limit_exactly,
    concurrent_submissions_fill_the_daily_limit_exactly
);

// ---------------------------------------------------------------------------
// The payer's and the merchant's state

/// A payer blocked by the operator: `subscriber.blocked`.
async fn payer_blocked_by_the_operator_is_refused(db: Db) {
    let Some((fx, blocked)) = with_payer(db, "payer_blocked_by_operator").await else {
        return;
    };
    let (st, _, b) = post_json(
        &fx.s.as_client("operator"),
        &fx.s.url(&format!("/v1/admin/subscribers/{blocked}/block")),
        &json!({}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let m = fx.signed(&blocked, "small", "EUR25.00", "R-blocked");
    fx.refused(&m.to_xml(), 403, "subscriber.blocked").await;
    fx.finish().await;
}
on_both_backends_async!(
    payer_blocked_by_the_operator_is_refused,
    payer_blocked_by_the_operator_is_refused
);

/// The payer's certificate suspended: `certificate.not_active`; resumed:
/// the same message goes through.
async fn suspended_certificate_is_refused_until_resumed(db: Db) {
    let Some(fx) = Fx::start(db, "suspended_certificate").await else {
        return;
    };
    let op = fx.s.as_client("operator");
    let held = random_msisdn();
    let (_, cert) = fx.s.active_subscriber(&held, PIN).await;
    let serial = tmcs::pki::CertInfo::from_pem(&cert).unwrap().serial_hex;
    let cert_url = |verb: &str| fx.s.url(&format!("/v1/admin/certificates/{serial}/{verb}"));
    let (st, _, b) = post_json(&op, &cert_url("suspend"), &json!({})).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("suspended")), "{b}");
    let m = fx.signed(&held, "small", "EUR25.00", "R-held");
    fx.refused(&m.to_xml(), 409, "certificate.not_active").await;
    let (st, _, b) = post_json(&op, &cert_url("resume"), &json!({})).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("active")), "{b}");
    fx.submit_ok(&m).await;
    fx.finish().await;
}
on_both_backends_async!(
    suspended_certificate_is_refused_until_resumed,
    suspended_certificate_is_refused_until_resumed
);

/// The payer's certificate revoked: `certificate.revoked`.
async fn revoked_certificate_is_refused(db: Db) {
    let Some(fx) = Fx::start(db, "revoked_certificate").await else {
        return;
    };
    let gone = random_msisdn();
    let (_, cert) = fx.s.active_subscriber(&gone, PIN).await;
    let serial = tmcs::pki::CertInfo::from_pem(&cert).unwrap().serial_hex;
    let (st, _, b) = post_json(
        &fx.s.as_client("operator"),
        &fx.s.url(&format!("/v1/admin/certificates/{serial}/revoke")),
        &json!({ "reason": "keyCompromise" }),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let m = fx.signed(&gone, "small", "EUR25.00", "R-revoked");
    fx.refused(&m.to_xml(), 409, "certificate.revoked").await;
    fx.finish().await;
}
on_both_backends_async!(
    revoked_certificate_is_refused,
    revoked_certificate_is_refused
);

/// The merchant suspended: its signature no longer counts
/// (`ims.unknown_party`); resumed: the same message goes through.
async fn suspended_merchant_is_unknown_until_resumed(db: Db) {
    let Some((fx, payer)) = with_payer(db, "suspended_merchant").await else {
        return;
    };
    let op = fx.s.as_client("operator");
    let party_url = |verb: &str| fx.s.url(&format!("/v1/admin/parties/{MERCHANT}/{verb}"));
    let (st, _, b) = post_json(&op, &party_url("suspend"), &json!({})).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("suspended")), "{b}");
    let m = fx.signed(&payer, "small", "EUR25.00", "R-merchant-held");
    fx.refused(&m.to_xml(), 400, "ims.unknown_party").await;
    let (st, _, b) = post_json(&op, &party_url("resume"), &json!({})).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("active")), "{b}");
    fx.submit_ok(&m).await;
    fx.finish().await;
}
on_both_backends_async!(
    suspended_merchant_is_unknown_until_resumed,
    suspended_merchant_is_unknown_until_resumed
);
