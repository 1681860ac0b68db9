//! Delegated signing over the real API (CONTRACT §4–§7): merchant → FSP →
//! tmcs → handset (or gateway) → tmcs → FSP, with every signature judged by
//! the openssl CLI, and every refusal checked to leave the state unchanged.
//!
//! This file is the fixture the scenarios share (and `core_bugs.rs` uses):
//! [`Fx`], a served instance with a merchant and an FSP registered by CSR,
//! which builds, signs and submits iMS messages and drives the handset API;
//! the RFC 9457 check [`problem`]; readers of the stored requests and audit
//! events; and the openssl judge of signatures. Each scenario starts its own
//! `Fx`, runs on SQLite and PostgreSQL, and ends with `Fx::finish`, which
//! verifies the audit chain. The scenarios, one behaviour each:
//!
//! - `happy.rs`: the canonical forms, submission, what the handset shows,
//!   one signature over exactly C, exactly once, person to person (§5–§7);
//! - `submission.rs`: refused submissions and the payer's and merchant's
//!   state (§4–§6);
//! - `authorisation.rs`: refused authorisations, decline, gateway, expiry
//!   (§4, §6–§7);
//! - `at_rest.rs`: no PIN in replies, audit events or database files (§4, §7);
//! - `relay.rs`: the relay's edges that need no receiver (§11): no
//!   callback, no delivery; outcome, receipt and operator refusals; https
//!   callbacks only; what mode `fsp+bank` refuses at submission. The trips
//!   through real receivers are `tools/tests/relay.rs`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use diesel::prelude::*;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tmcs::ims::{ImsMessage, Money, PartyId, Ref};
use tmcs::store::audit_rows::{self, EventFilter, EventRow};
use tmcs_client::Handset;

use crate::pkicheck::{openssl_bg, path_str, write_pem};
use crate::support::{get_json, json_of, post_json, unique, Db, Env, Served};

mod at_rest;
mod authorisation;
mod happy;
mod relay;
mod submission;

pub(crate) const MERCHANT: &str = "Merkur.Trade@merchant.xbank";
pub(crate) const FSP: &str = "Demo.FSP@fsp.xbank";
pub(crate) const PIN: &str = "482619";
pub(crate) const PROBLEM: &str = "application/problem+json";

pub(crate) type Reply = (u16, String, Value);

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

fn unb64(s: &str) -> Vec<u8> {
    STANDARD.decode(s).unwrap()
}

/// `dtbs_sha256` as CONTRACT §5 defines it: base64url, no padding, of SHA-256(C).
fn dtbs_of(c: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(openssl::sha::sha256(c))
}

fn ecdsa_sha256(key: &PKey<Private>, data: &[u8]) -> Vec<u8> {
    let mut s = Signer::new(MessageDigest::sha256(), key).unwrap();
    s.sign_oneshot_to_vec(data).unwrap()
}

/// Asserts an RFC 9457 problem with `status` and `code`.
#[track_caller]
pub(crate) fn problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(
        (r.0, r.1.as_str(), r.2["code"].as_str()),
        (status, PROBLEM, Some(code)),
        "{}",
        r.2
    );
    assert_eq!(r.2["type"], format!("urn:tmcs:problem:{code}"), "{}", r.2);
    assert_eq!(r.2["status"], status, "{}", r.2);
    assert!(
        r.2["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{}",
        r.2
    );
}

/// A party's key and the certificate the tmcs CA issued for it from a CSR.
pub(crate) struct PartyKey {
    key: PKey<Private>,
    key_pem: String,
    cert_pem: String,
}

pub(crate) async fn register_party(s: &Served, id: &str, kind: &str) -> PartyKey {
    let kp = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec![])
        .unwrap()
        .serialize_request(&kp)
        .unwrap()
        .pem()
        .unwrap();
    let (st, _, b) = post_json(
        &s.as_client("operator"),
        &s.url("/v1/admin/parties"),
        &json!({ "party_id": id, "kind": kind, "csr": csr }),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(
        (b["party_id"].as_str(), b["kind"].as_str()),
        (Some(id), Some(kind))
    );
    let cert_pem = b["certificate"].as_str().unwrap().to_string();
    let key_pem = kp.serialize_pem();
    let key = PKey::private_key_from_pem(key_pem.as_bytes()).unwrap();
    let x = openssl::x509::X509::from_pem(cert_pem.as_bytes()).unwrap();
    assert!(
        x.public_key().unwrap().public_eq(&key),
        "the issued certificate must hold the CSR's key"
    );
    PartyKey {
        key,
        key_pem,
        cert_pem,
    }
}

/// A served instance with a merchant and an FSP registered by CSR.
pub(crate) struct Fx {
    pub(crate) env: Env,
    pub(crate) s: Served,
    merchant: PartyKey,
    fsp: PartyKey,
    pub(crate) fsp_client: awc::Client,
}

impl Fx {
    pub(crate) async fn start(db: Db, test: &str) -> Option<Fx> {
        Self::start_with(db, test, &[]).await
    }

    /// [`Fx::start`] with extra `TMCS_*` settings.
    pub(crate) async fn start_with(db: Db, test: &str, extra: &[(&str, &str)]) -> Option<Fx> {
        let env = Env::with(db, test, extra)?;
        env.init();
        let s = Served::start(&env);
        let merchant = register_party(&s, MERCHANT, "merchant").await;
        let fsp = register_party(&s, FSP, "fsp").await;
        let fsp_client =
            tmcs_client::https::https_client_pem(&env.ca(), &fsp.cert_pem, &fsp.key_pem).unwrap();
        Some(Fx {
            env,
            s,
            merchant,
            fsp,
            fsp_client,
        })
    }

    /// The server's time, whole seconds.
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.env.now().replace_nanosecond(0).unwrap()
    }

    /// An unsigned iMS from `tel:<msisdn>` to the merchant, timestamped now.
    pub(crate) fn ims(
        &self,
        msisdn: &str,
        tier: &str,
        amount: &str,
        reference: &str,
    ) -> ImsMessage {
        ImsMessage {
            tier: tier.parse().unwrap(),
            reference: Some(Ref::new(reference).unwrap()),
            from: PartyId::parse(&format!("tel:{msisdn}")).unwrap(),
            from_sign: None,
            to: PartyId::parse(MERCHANT).unwrap(),
            to_sign: None,
            fsp_sign: None,
            timestamp: self.now(),
            account_payable: "1234-5678-9abc".into(),
            account_receivable: "9876-543-21de".into(),
            amount: Money::parse(amount).unwrap(),
        }
    }

    /// Merchant signs M, FSP signs F.
    pub(crate) fn sign(&self, m: &mut ImsMessage) {
        sign_with(m, &self.merchant.key, &self.fsp.key);
    }

    pub(crate) fn signed(
        &self,
        msisdn: &str,
        tier: &str,
        amount: &str,
        reference: &str,
    ) -> ImsMessage {
        let mut m = self.ims(msisdn, tier, amount, reference);
        self.sign(&mut m);
        m
    }

    pub(crate) async fn submit(&self, xml: &str) -> Reply {
        submit_raw(
            &self.s,
            &self.fsp_client,
            "application/xml",
            xml.as_bytes().to_vec(),
        )
        .await
    }

    /// Submits `m` as the FSP and expects a new request; returns its id.
    pub(crate) async fn submit_ok(&self, m: &ImsMessage) -> String {
        let r = self.submit(&m.to_xml()).await;
        assert_eq!(r.0, 202, "{}", r.2);
        r.2["request_id"].as_str().unwrap().to_string()
    }

    #[track_caller]
    pub(crate) fn assert_count(&self, before: i64) {
        assert_eq!(
            request_count(&self.s),
            before,
            "a refusal must not create a request"
        );
    }

    /// Submits and expects the refusal `code` with no request created.
    pub(crate) async fn refused(&self, xml: &str, status: u16, code: &str) -> Reply {
        let before = request_count(&self.s);
        let rejected_before = events(&self.s, None, Some("request.rejected")).len();
        let r = self.submit(xml).await;
        problem(&r, status, code);
        self.assert_count(before);
        // Refusals decided by the domain (not the HTTP layer) are audited with their code.
        let domain = ["ims.", "limit.", "subscriber.", "certificate."]
            .iter()
            .any(|p| code.starts_with(p));
        if domain {
            let rejected = events(&self.s, None, Some("request.rejected"));
            assert_eq!(rejected.len(), rejected_before + 1, "{code} not audited");
            let details: Value = serde_json::from_str(&rejected.last().unwrap().details).unwrap();
            assert_eq!(details["problem"], code);
        }
        r
    }

    pub(crate) async fn handset_get(&self, h: &Handset, path: &str) -> Reply {
        let hdr = h
            .device_header("GET", path, self.env.now().unix_timestamp())
            .unwrap();
        let res = self
            .s
            .anonymous()
            .get(self.s.url(path))
            .insert_header(("authorization", hdr))
            .send()
            .await
            .unwrap();
        json_of(res).await
    }

    pub(crate) async fn handset_post(&self, h: &Handset, path: &str, body: &Value) -> Reply {
        let hdr = h
            .device_header("POST", path, self.env.now().unix_timestamp())
            .unwrap();
        let res = self
            .s
            .anonymous()
            .post(self.s.url(path))
            .insert_header(("authorization", hdr))
            .send_json(body)
            .await
            .unwrap();
        json_of(res).await
    }

    /// `GET /v1/handset/requests/{id}`, expected to succeed.
    pub(crate) async fn detail(&self, h: &Handset, id: &str) -> Value {
        let r = self
            .handset_get(h, &format!("/v1/handset/requests/{id}"))
            .await;
        assert_eq!(r.0, 200, "{}", r.2);
        r.2
    }

    pub(crate) async fn authorize_block(&self, h: &Handset, id: &str, block: &str) -> Reply {
        self.handset_post(
            h,
            &format!("/v1/handset/requests/{id}/authorize"),
            &json!({ "pin_block": block }),
        )
        .await
    }

    /// Reads the request and authorises it with `pin`.
    pub(crate) async fn authorize(&self, h: &Handset, id: &str, pin: &str) -> Reply {
        let d = self.detail(h, id).await;
        let block = h
            .auth_pin_block(
                id,
                d["nonce"].as_str().unwrap(),
                d["dtbs_sha256"].as_str().unwrap(),
                pin,
            )
            .unwrap();
        self.authorize_block(h, id, &block).await
    }

    pub(crate) async fn fsp_view(&self, id: &str) -> Value {
        let (st, _, b) = get_json(
            &self.fsp_client,
            &self.s.url(&format!("/v1/fsp/requests/{id}")),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["request_id"], id);
        b
    }

    /// The audit log verifies end to end (`tmcs audit verify`), then the server stops.
    pub(crate) async fn finish(self) {
        let key = self.s.app.svc.pki.audit_public_key().unwrap();
        let report = tmcs::audit::verify_store(&self.s.app.svc.store, &key, &[]).unwrap();
        assert!(report.events > 0, "{report:?}");
        self.s.stop().await;
    }
}

fn sign_with(m: &mut ImsMessage, merchant: &PKey<Private>, fsp: &PKey<Private>) {
    m.to_sign = Some(ecdsa_sha256(merchant, &m.canonical_m()));
    m.fsp_sign = Some(ecdsa_sha256(fsp, &m.canonical_f().unwrap()));
}

async fn submit_raw(s: &Served, c: &awc::Client, content_type: &str, body: Vec<u8>) -> Reply {
    let res = c
        .post(s.url("/v1/fsp/messages"))
        .insert_header(("content-type", content_type))
        .send_body(body)
        .await
        .unwrap();
    json_of(res).await
}

pub(crate) fn request_count(s: &Served) -> i64 {
    use tmcs::store::schema::requests;
    s.app
        .svc
        .store
        .read(|c| -> Result<i64, tmcs::store::StoreError> {
            Ok(requests::table.count().get_result(c)?)
        })
        .unwrap()
}

pub(crate) fn stored(s: &Served, id: &str) -> tmcs::store::requests::RequestRow {
    s.app
        .svc
        .store
        .read(|c| tmcs::store::requests::get(c, id))
        .unwrap()
        .unwrap()
}

pub(crate) fn events(s: &Served, subject: Option<String>, action: Option<&str>) -> Vec<EventRow> {
    s.app
        .svc
        .store
        .read(|c| {
            audit_rows::list(
                c,
                &EventFilter {
                    subject,
                    action: action.map(str::to_string),
                    after_seq: 0,
                    limit: 100_000,
                },
            )
        })
        .unwrap()
}

pub(crate) fn request_events(s: &Served, id: &str, action: &str) -> usize {
    events(s, Some(format!("request:{id}")), Some(action)).len()
}

/// `openssl dgst -sha256 -verify <pub of cert> -signature sig.der data.bin`.
async fn openssl_verifies(env: &Env, cert_pem: &str, data: &[u8], sig: &[u8]) -> (bool, String) {
    let tag = unique("v-");
    let cert = write_pem(env, &format!("{tag}.crt"), cert_pem);
    let pubkey = env.path().join(format!("{tag}.pub.pem"));
    let (ok, out) = openssl_bg(vec![
        "x509".into(),
        "-in".into(),
        path_str(&cert).into(),
        "-pubkey".into(),
        "-noout".into(),
        "-out".into(),
        path_str(&pubkey).into(),
    ])
    .await;
    assert!(ok, "{out}");
    let data_file = env.path().join(format!("{tag}.bin"));
    let sig_file = env.path().join(format!("{tag}.sig.der"));
    std::fs::write(&data_file, data).unwrap();
    std::fs::write(&sig_file, sig).unwrap();
    let (ok, out) = openssl_bg(vec![
        "dgst".into(),
        "-sha256".into(),
        "-verify".into(),
        path_str(&pubkey).into(),
        "-signature".into(),
        path_str(&sig_file).into(),
        path_str(&data_file).into(),
    ])
    .await;
    (ok && out.contains("Verified OK"), out)
}

/// Asserts that `sig` verifies over `data` with `cert_pem` and not over a
/// one-byte change of `data` (so the judge is a real one).
async fn assert_signature(env: &Env, cert_pem: &str, data: &[u8], sig: &[u8]) {
    let (ok, out) = openssl_verifies(env, cert_pem, data, sig).await;
    assert!(ok, "openssl dgst -verify: {out}");
    let mut tampered = data.to_vec();
    let last = tampered.len() - 2;
    tampered[last] ^= 1;
    let (ok, out) = openssl_verifies(env, cert_pem, &tampered, sig).await;
    assert!(!ok, "a signature must not verify over other bytes: {out}");
}
