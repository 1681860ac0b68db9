use super::*;
use crate::subscriber;

#[test]
fn verification_code_is_four_digits_from_the_digest() {
    let d = openssl::sha::sha256(b"C");
    let vc = verification_code(&d);
    assert_eq!(vc.len(), 4);
    let h = openssl::sha::sha256(&d);
    assert_eq!(
        vc,
        format!("{:04}", (u32::from(h[30]) * 256 + u32::from(h[31])) % 10000)
    );
    assert_ne!(verification_code(&openssl::sha::sha256(b"D")), "");
}

#[test]
fn display_message_is_exact() {
    assert_eq!(
        display_message("r", "p@merchant.x", "EUR1.00", "0042", "abc", "2026-01-01T00:00:00Z"),
        "tmcs-display-v1\nrequest_id:r\npayee:p@merchant.x\namount:EUR1.00\nverification_code:0042\ndtbs_sha256:abc\nexpires_at:2026-01-01T00:00:00Z\n"
    );
}

// ---------------------------------------------------------------------------
// Domain unit tests of submit and authorise, on a software custodian and
// SQLite (no SoftHSM2). Together they meet every refusal code of CONTRACT
// §6–7; the integration suite runs the same flows on the real token.

use std::sync::atomic::Ordering;

use crate::error::{DomainError, Problem};
use crate::pki::lifecycle::{self, Transition};
use crate::pki::Reason;
use crate::states::RequestStatus;
use crate::testkit::{Kit, FSP, PIN};
use tmcs_client::Handset;

const WRONG: &str = "739152";

#[track_caller]
fn refused<T: std::fmt::Debug>(r: crate::error::DomainResult<T>, want: Problem) -> DomainError {
    let e = r.expect_err("expected a refusal");
    assert_eq!(e.problem(), Some(want), "{e}");
    e
}

fn msisdn(n: u32) -> String {
    format!("+4915100{n:05}")
}

/// Submits and expects `want`; no request is created and the refusal is
/// audited as `request.rejected` with its code.
#[track_caller]
fn submit_refused(kit: &Kit, xml: &[u8], want: Problem) {
    let before = kit.request_count();
    let audited = kit.events("request.rejected").len();
    let r = super::submit(&kit.svc, Some(FSP), &kit.fsp_actor, xml);
    refused(r, want);
    assert_eq!(kit.request_count(), before, "{want} created a request");
    let events = kit.events("request.rejected");
    assert_eq!(events.len(), audited + 1, "{want} not audited");
    let details: serde_json::Value = serde_json::from_str(&events.last().unwrap().details).unwrap();
    assert_eq!(details["problem"], want.code());
}

#[test]
fn submit_accepts_then_answers_the_same_request() {
    let kit = Kit::new();
    let payer = msisdn(1);
    kit.subscriber(&payer, PIN);
    let m = kit.signed(&payer, "small", "EUR25.00", "R-1");
    let first = kit.submit(&m).unwrap();
    assert!(first.created);
    assert_eq!(first.request.status, RequestStatus::PendingAuthorization);
    let c = m.canonical_c().unwrap();
    assert_eq!(first.request.dtbs_sha256, b64url(&openssl::sha::sha256(&c)));
    let again = kit.submit(&m).unwrap();
    assert!(!again.created);
    assert_eq!(again.request.id, first.request.id);
    assert_eq!(kit.request_count(), 1);
    assert_eq!(kit.events("request.received").len(), 1);
}

#[test]
fn submit_refusals_of_the_message() {
    let kit = Kit::new();
    let payer = msisdn(2);
    kit.subscriber(&payer, PIN);

    submit_refused(&kit, b"<iMS>", Problem::ImsMalformed);
    let mut big = kit
        .signed(&payer, "small", "EUR1.00", "R-big")
        .to_xml()
        .into_bytes();
    big.extend(std::iter::repeat_n(b' ', crate::ims::MAX_IMS_BYTES));
    submit_refused(&kit, &big, Problem::PayloadTooLarge);

    let mut m = kit.signed(&payer, "small", "EUR1.00", "R-sig");
    m.to_sign = Some(vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]);
    submit_refused(&kit, m.to_xml().as_bytes(), Problem::ImsBadSignature);

    let mut m = kit.ims(&payer, "small", "EUR1.00", "R-unknown");
    m.to = "Nobody.Shop@merchant.kit".parse().unwrap();
    kit.sign(&mut m);
    submit_refused(&kit, m.to_xml().as_bytes(), Problem::ImsUnknownParty);

    let mut m = kit.ims(&payer, "small", "EUR1.00", "R-stale");
    m.timestamp -= time::Duration::hours(1);
    kit.sign(&mut m);
    submit_refused(&kit, m.to_xml().as_bytes(), Problem::ImsStale);

    let m = kit.signed(&payer, "medium", "EUR1.00", "R-tier");
    submit_refused(&kit, m.to_xml().as_bytes(), Problem::ImsTierMismatch);

    let m = kit.signed(&payer, "small", "JPY100", "R-jpy");
    submit_refused(&kit, m.to_xml().as_bytes(), Problem::ImsCurrencyUnsupported);

    let m = kit.signed(&payer, "large", "EUR10000.01", "R-limit");
    submit_refused(&kit, m.to_xml().as_bytes(), Problem::LimitExceeded);

    // The daily limit: 20000.00, in two payments of 10000.00, then one more cent.
    for r in ["R-day1", "R-day2"] {
        kit.submit(&kit.signed(&payer, "large", "EUR10000.00", r))
            .unwrap();
    }
    let m = kit.signed(&payer, "small", "EUR0.01", "R-day3");
    submit_refused(&kit, m.to_xml().as_bytes(), Problem::LimitExceeded);

    // Another message under a used reference.
    let m = kit.signed(&payer, "large", "EUR9999.00", "R-day1");
    submit_refused(&kit, m.to_xml().as_bytes(), Problem::ImsReplay);

    // An FSP client that is not bound to an FSP party.
    let before = kit.request_count();
    let m = kit.signed(&payer, "small", "EUR1.00", "R-unbound");
    refused(
        super::submit(&kit.svc, None, &kit.fsp_actor, m.to_xml().as_bytes()),
        Problem::AuthForbidden,
    );
    assert_eq!(kit.request_count(), before);
}

#[test]
fn submit_refusals_of_the_payer() {
    let kit = Kit::new();
    let xml = |m: &crate::ims::ImsMessage| m.to_xml().into_bytes();

    // Not a subscriber.
    let m = kit.signed(&msisdn(10), "small", "EUR1.00", "R-nobody");
    submit_refused(&kit, &xml(&m), Problem::SubscriberNotFound);

    // Registered, never activated.
    let pending = msisdn(11);
    subscriber::register(
        &kit.svc,
        &kit.operator,
        subscriber::Registration {
            msisdn: pending.clone(),
            display_name: "P".into(),
            kyc_ref: "K".into(),
            party_id: None,
        },
    )
    .unwrap();
    let m = kit.signed(&pending, "small", "EUR1.00", "R-pending");
    submit_refused(&kit, &xml(&m), Problem::SubscriberNotActive);

    // Blocked by the operator.
    let blocked = msisdn(12);
    kit.subscriber(&blocked, PIN);
    subscriber::block(&kit.svc, &kit.operator, &blocked).unwrap();
    let m = kit.signed(&blocked, "small", "EUR1.00", "R-blocked");
    submit_refused(&kit, &xml(&m), Problem::SubscriberBlocked);

    // Blocked by its own wrong PINs.
    let pin_blocked = msisdn(13);
    let h = kit.subscriber(&pin_blocked, PIN);
    let id = kit
        .submit(&kit.signed(&pin_blocked, "small", "EUR1.00", "R-pins"))
        .unwrap()
        .request
        .id;
    let payer = kit.row(&pin_blocked);
    for _ in 0..3 {
        let block = kit.auth_block(&h, &id, WRONG);
        let _ = super::authorize_handset(&kit.svc, &payer, &id, &block);
    }
    let m = kit.signed(&pin_blocked, "small", "EUR1.00", "R-pins2");
    submit_refused(&kit, &xml(&m), Problem::PinBlocked);

    // The payer's certificate suspended, then revoked.
    let held = msisdn(14);
    kit.subscriber(&held, PIN);
    let serial = kit.row(&held).cert_serial.unwrap();
    lifecycle::apply(&kit.svc, &kit.operator, &serial, Transition::Suspend).unwrap();
    let m = kit.signed(&held, "small", "EUR1.00", "R-held");
    submit_refused(&kit, &xml(&m), Problem::CertificateNotActive);
    lifecycle::apply(
        &kit.svc,
        &kit.operator,
        &serial,
        Transition::Revoke(Reason::KeyCompromise),
    )
    .unwrap();
    let m = kit.signed(&held, "small", "EUR1.00", "R-revoked");
    submit_refused(&kit, &xml(&m), Problem::CertificateRevoked);
}

/// A payer with one pending request: (handset, payer row, request id).
fn pending(
    kit: &Kit,
    n: u32,
    amount: &str,
    tier: &str,
) -> (Handset, crate::store::subscribers::SubscriberRow, String) {
    let m = msisdn(n);
    let h = kit.subscriber(&m, PIN);
    let id = kit
        .submit(&kit.signed(&m, tier, amount, &format!("R-{n}")))
        .unwrap()
        .request
        .id;
    (h, kit.row(&m), id)
}

/// No signed request without its OCSP response: when the OCSP response
/// cannot be signed (here the custodian lost the OCSP key), C is not signed
/// either, the request fails (`hsm.unavailable`, audited) and nothing of
/// the attempt is stored.
#[test]
fn no_ocsp_response_no_signature() {
    let kit = Kit::new();
    let (h, payer, id) = pending(&kit, 21, "EUR25.00", "small");
    let before = kit.soft.signatures.load(Ordering::SeqCst);
    kit.svc.custody.destroy_key(&kit.svc.pki.keys.ocsp).unwrap();
    let block = kit.auth_block(&h, &id, PIN);
    assert!(super::authorize_handset(&kit.svc, &payer, &id, &block).is_err());
    assert_eq!(kit.soft.signatures.load(Ordering::SeqCst), before);
    let row = kit.request(&id);
    assert_eq!(row.status, RequestStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("hsm.unavailable"));
    assert!(row.signature_b64.is_none() && row.signed_xml.is_none());
    assert!(kit
        .svc
        .store
        .read(|c| crate::store::evidence::get(c, &id))
        .unwrap()
        .is_none());
    let failed = kit
        .svc
        .store
        .read(|c| {
            crate::store::audit_rows::list(
                c,
                &crate::store::audit_rows::EventFilter {
                    subject: Some(super::subject(&id)),
                    action: Some("request.failed".into()),
                    after_seq: 0,
                    limit: 10,
                },
            )
        })
        .unwrap();
    assert_eq!(failed.len(), 1);
}

#[test]
fn authorize_signs_exactly_once_what_was_bound() {
    let kit = Kit::new();
    let (h, payer, id) = pending(&kit, 20, "EUR25.00", "small");
    let before = kit.soft.signatures.load(Ordering::SeqCst);
    let block = kit.auth_block(&h, &id, PIN);
    let signed = super::authorize_handset(&kit.svc, &payer, &id, &block).unwrap();
    // Two HSM signatures: the OCSP response kept as evidence, then C.
    assert_eq!(kit.soft.signatures.load(Ordering::SeqCst), before + 2);
    let ocsp = kit
        .svc
        .store
        .read(|c| crate::store::evidence::get(c, &id))
        .unwrap()
        .expect("the OCSP response stored with the signature");
    assert!(ocsp.produced_at <= kit.request(&id).signed_at.unwrap());
    let row = kit.request(&id);
    assert_eq!(row.status, RequestStatus::Signed);
    assert_eq!(
        row.signature_b64.as_deref(),
        Some(signed.signature.as_str())
    );
    // The signature is over C, with the payer's certificate key.
    let c = crate::ims::ImsMessage::parse(row.ims_xml.as_bytes())
        .unwrap()
        .canonical_c()
        .unwrap();
    let cert = kit
        .svc
        .store
        .read(|c| crate::store::certs::get(c, payer.cert_serial.as_deref().unwrap()))
        .unwrap()
        .unwrap();
    let key = openssl::x509::X509::from_pem(cert.pem.as_bytes())
        .unwrap()
        .public_key()
        .unwrap();
    let sig = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &signed.signature,
    )
    .unwrap();
    let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    assert!(v.verify_oneshot(&sig, &c).unwrap());
    // Once.
    let block = kit.auth_block(&h, &id, PIN);
    refused(
        super::authorize_handset(&kit.svc, &payer, &id, &block),
        Problem::RequestNotPending,
    );
    assert_eq!(kit.soft.signatures.load(Ordering::SeqCst), before + 2);
}

#[test]
fn authorize_refusals() {
    let kit = Kit::new();
    let (h, payer, id) = pending(&kit, 30, "EUR25.00", "small");

    // Not a PIN block; bound to another nonce: nothing counted.
    refused(
        super::authorize_handset(&kit.svc, &payer, &id, "AAAA"),
        Problem::PinblockInvalid,
    );
    let row = kit.request(&id);
    let block = h
        .auth_pin_block(&id, "another-nonce", &row.dtbs_sha256, PIN)
        .unwrap();
    refused(
        super::authorize_handset(&kit.svc, &payer, &id, &block),
        Problem::SadMismatch,
    );
    assert_eq!(kit.row(&payer.msisdn).attempts, 0);

    // Another subscriber's request.
    let (_, other, _) = pending(&kit, 31, "EUR5.00", "small");
    let block = kit.auth_block(&h, &id, PIN);
    refused(
        super::authorize_handset(&kit.svc, &other, &id, &block),
        Problem::RequestNotFound,
    );

    // Wrong PINs: two left, one left, then blocked; the right PIN is refused
    // too; nothing is signed.
    let signatures = kit.soft.signatures.load(Ordering::SeqCst);
    for left in [2, 1] {
        let block = kit.auth_block(&h, &id, WRONG);
        let e = refused(
            super::authorize_handset(&kit.svc, &payer, &id, &block),
            Problem::PinWrong,
        );
        assert!(matches!(e, DomainError::Rejected { attempts_left: Some(l), .. } if l == left));
    }
    let block = kit.auth_block(&h, &id, WRONG);
    refused(
        super::authorize_handset(&kit.svc, &payer, &id, &block),
        Problem::PinBlocked,
    );
    let block = kit.auth_block(&h, &id, PIN);
    refused(
        super::authorize_handset(&kit.svc, &payer, &id, &block),
        Problem::PinBlocked,
    );
    assert_eq!(kit.request(&id).status, RequestStatus::PendingAuthorization);
    assert_eq!(kit.soft.signatures.load(Ordering::SeqCst), signatures);

    // Declined: no longer pending.
    let (h2, payer2, id2) = pending(&kit, 32, "EUR5.00", "small");
    super::decline(&kit.svc, &payer2.id, &id2).unwrap();
    let block = kit.auth_block(&h2, &id2, PIN);
    refused(
        super::authorize_handset(&kit.svc, &payer2, &id2, &block),
        Problem::RequestNotPending,
    );

    // Expired: refused, and only the sweeper writes it.
    let (h3, payer3, id3) = pending(&kit, 33, "EUR5.00", "small");
    let block = kit.auth_block(&h3, &id3, PIN);
    kit.clock.advance(time::Duration::seconds(121));
    refused(
        super::authorize_handset(&kit.svc, &payer3, &id3, &block),
        Problem::RequestExpired,
    );
    assert_eq!(
        kit.request(&id3).status,
        RequestStatus::PendingAuthorization
    );
    assert!(super::expire_overdue(&kit.svc).unwrap() >= 1);
    assert_eq!(kit.request(&id3).status, RequestStatus::Expired);
}

#[test]
fn authorize_refuses_a_blocked_payer_and_the_gateway_beyond_small() {
    let kit = Kit::new();
    let (h, payer, id) = pending(&kit, 40, "EUR5.00", "small");
    subscriber::block(&kit.svc, &kit.operator, &payer.msisdn).unwrap();
    let block = kit.auth_block(&h, &id, PIN);
    refused(
        super::authorize_handset(&kit.svc, &payer, &id, &block),
        Problem::SubscriberBlocked,
    );
    assert_eq!(kit.row(&payer.msisdn).attempts, 0);

    let gateway = crate::audit::Actor::Client {
        role: "gateway".into(),
        fingerprint: "02".into(),
    };
    let (_, medium_payer, medium) = pending(&kit, 41, "EUR60.00", "medium");
    refused(
        super::authorize_gateway(&kit.svc, &gateway, &medium_payer.msisdn, &medium, PIN),
        Problem::AuthForbidden,
    );
    let (_, small_payer, small) = pending(&kit, 42, "EUR6.00", "small");
    let signed =
        super::authorize_gateway(&kit.svc, &gateway, &small_payer.msisdn, &small, PIN).unwrap();
    assert_eq!(signed.status, RequestStatus::Signed);
}

#[test]
fn a_changed_message_is_failed_not_signed() {
    let kit = Kit::new();
    let (h, payer, id) = pending(&kit, 50, "EUR25.00", "small");
    let block = kit.auth_block(&h, &id, PIN);
    let signatures = kit.soft.signatures.load(Ordering::SeqCst);
    kit.svc
        .store
        .write(|c| -> Result<usize, crate::store::StoreError> {
            use crate::store::schema::requests;
            use diesel::prelude::*;
            let row = crate::store::requests::get(c, &id)?.unwrap();
            Ok(diesel::update(requests::table.find(&id))
                .set(requests::ims_xml.eq(row.ims_xml.replace("EUR25.00", "EUR24.00")))
                .execute(c)?)
        })
        .unwrap();
    let e = super::authorize_handset(&kit.svc, &payer, &id, &block).unwrap_err();
    assert!(matches!(e, DomainError::Internal(_)), "{e}");
    assert_eq!(kit.soft.signatures.load(Ordering::SeqCst), signatures);
    let row = kit.request(&id);
    assert_eq!(row.status, RequestStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("dtbs.mismatch"));
    assert_eq!(kit.events("request.failed").len(), 1);
}

#[test]
fn activation_refusals() {
    let kit = Kit::new();
    let m = msisdn(60);
    let issued = subscriber::register(
        &kit.svc,
        &kit.operator,
        subscriber::Registration {
            msisdn: m.clone(),
            display_name: "A".into(),
            kyc_ref: "K".into(),
            party_id: None,
        },
    )
    .unwrap();
    let code = issued.activation_code.expose().to_string();
    let h = Handset::new(&m, kit.svc.pki.transport.info.pem.as_bytes()).unwrap();
    let req = |code: &str, pin: &str| -> subscriber::ActivateRequest {
        serde_json::from_value(h.activation_body(code, pin).unwrap()).unwrap()
    };
    refused(
        subscriber::activate(&kit.svc, req(&code, "1234"), None),
        Problem::PinTrivial,
    );
    refused(
        subscriber::activate(&kit.svc, req(&code, "12a4"), None),
        Problem::PinInvalid,
    );
    for left in [2u32, 1, 0] {
        let e = refused(
            subscriber::activate(&kit.svc, req("00000000", PIN), None),
            Problem::ActivationBadCode,
        );
        assert!(matches!(e, DomainError::Rejected { attempts_left: Some(l), .. } if l == left));
    }
    refused(
        subscriber::activate(&kit.svc, req(&code, PIN), None),
        Problem::SubscriberBlocked,
    );

    let other = msisdn(61);
    let code = subscriber::register(
        &kit.svc,
        &kit.operator,
        subscriber::Registration {
            msisdn: other.clone(),
            display_name: "B".into(),
            kyc_ref: "K".into(),
            party_id: None,
        },
    )
    .unwrap()
    .activation_code
    .expose()
    .to_string();
    let h2 = Handset::new(&other, kit.svc.pki.transport.info.pem.as_bytes()).unwrap();
    kit.clock.advance(time::Duration::hours(73));
    let r: subscriber::ActivateRequest =
        serde_json::from_value(h2.activation_body(&code, PIN).unwrap()).unwrap();
    refused(
        subscriber::activate(&kit.svc, r, None),
        Problem::ActivationExpired,
    );
    let r: subscriber::ActivateRequest = serde_json::from_value(
        Handset::new(&msisdn(62), kit.svc.pki.transport.info.pem.as_bytes())
            .unwrap()
            .activation_body("12345678", PIN)
            .unwrap(),
    )
    .unwrap();
    // No activation pending: the same answer as a wrong code for a pending
    // one, counting down per source.
    let e = refused(
        subscriber::activate(&kit.svc, r, None),
        Problem::ActivationBadCode,
    );
    assert!(matches!(
        e,
        DomainError::Rejected {
            attempts_left: Some(2),
            ..
        }
    ));
}

#[test]
fn device_authentication_refusals() {
    use crate::subscriber::DeviceCall;
    let kit = Kit::new();
    let m = msisdn(70);
    let h = kit.subscriber(&m, PIN);
    let now = crate::clock::Clock::now(kit.clock.as_ref()).unix_timestamp();
    let call = |header: Option<&str>, method: &'static str| {
        let header = header.map(str::to_string);
        let r = subscriber::authenticate(
            &kit.svc,
            DeviceCall {
                header: header.as_deref(),
                method,
                path: "/v1/handset/requests",
                route: "/v1/handset/requests",
                source: None,
            },
        );
        r
    };
    let good = h
        .device_header("POST", "/v1/handset/requests", now)
        .unwrap();
    assert_eq!(call(Some(&good), "POST").unwrap().subscriber.msisdn, m);
    // The same signature again on a state-changing call.
    refused(call(Some(&good), "POST"), Problem::AuthDeviceSignature);
    refused(call(None, "GET"), Problem::AuthDeviceSignature);
    let stale = h
        .device_header("GET", "/v1/handset/requests", now - 301)
        .unwrap();
    refused(call(Some(&stale), "GET"), Problem::AuthDeviceSignature);
    let other_path = h.device_header("GET", "/v1/handset/pin", now).unwrap();
    refused(call(Some(&other_path), "GET"), Problem::AuthDeviceSignature);
    // The replay (a valid signature) is its own event; the callers who
    // proved nothing are counted, and written as one event per source.
    assert_eq!(kit.events("auth.denied").len(), 1);
    assert_eq!(kit.svc.refusals.pending(), 1);
    assert_eq!(crate::audit::refusals::flush(&kit.svc).unwrap(), 1);
    let refused = kit.events("auth.refused");
    assert_eq!(refused.len(), 1);
    let d: serde_json::Value = serde_json::from_str(&refused[0].details).unwrap();
    assert_eq!(d["count"], 3, "{d}");
    assert_eq!(crate::audit::refusals::flush(&kit.svc).unwrap(), 0);
}
