//! The OCSP responder's pre-signed answers and the plain-HTTP PKI listener
//! (issue #8, finding 8), judged by the openssl CLI:
//!
//! * a cached answer costs no HSM signature; a status change is answered
//!   at once, with one new signature; half the validity re-signs;
//! * `GET /pki/ocsp/{base64}` answers like POST;
//! * nonces: ignored by default, echoed with `pki.ocsp_nonce = "echo"`,
//!   over 32 bytes refused (malformedRequest);
//! * the plain-HTTP listener serves `/pki/*` only, `openssl ocsp -url
//!   http://…` works against it, and issued certificates name it;
//! * a change made by another node reaches this node's answers within a second.

use std::path::{Path, PathBuf};

use base64::Engine;
use der::{Decode, Encode};
use serde_json::json;

use crate::on_both_backends_async;
use crate::pkicheck::{openssl_bg, path_str, write_pem};
use crate::support::{post_json, Db, Env, Served};

/// A merchant registered by CSR: its certificate PEM and serial.
async fn party_cert(s: &Served, id: &str) -> (String, String) {
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
        &json!({ "party_id": id, "kind": "merchant", "csr": csr }),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let pem = b["certificate"].as_str().unwrap().to_string();
    let serial = tmcs::pki::CertInfo::from_pem(&pem).unwrap().serial_hex;
    (pem, serial)
}

fn hsm_signatures(s: &Served) -> u64 {
    s.app
        .hsm
        .metrics()
        .op_seconds
        .with_label_values(&["ecdsa_sign"])
        .get_sample_count()
}

/// `openssl ocsp -reqout` for `leaf` (with or without a nonce).
async fn request_file(env: &Env, issuing: &Path, leaf: &Path, nonce: bool, tag: &str) -> PathBuf {
    let out = env.path().join(format!("{tag}.req.der"));
    let mut args: Vec<String> = vec![
        "ocsp".into(),
        "-issuer".into(),
        path_str(issuing).into(),
        "-cert".into(),
        path_str(leaf).into(),
        "-reqout".into(),
        path_str(&out).into(),
    ];
    if !nonce {
        args.push("-no_nonce".into());
    }
    let (ok, text) = openssl_bg(args).await;
    assert!(ok, "{text}");
    out
}

async fn post(base: &str, body: Vec<u8>) -> Vec<u8> {
    let c = awc::Client::default();
    let mut res = c
        .post(format!("{base}/pki/ocsp"))
        .insert_header(("content-type", "application/ocsp-request"))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.body().limit(1 << 20).await.unwrap().to_vec()
}

/// openssl's reading of an answer to `req`.
async fn judge(env: &Env, req: &Path, resp: &[u8], tag: &str) -> String {
    let file = env.path().join(format!("{tag}.resp.der"));
    std::fs::write(&file, resp).unwrap();
    let (_, text) = openssl_bg(vec![
        "ocsp".into(),
        "-reqin".into(),
        path_str(req).into(),
        "-respin".into(),
        path_str(&file).into(),
        "-CAfile".into(),
        path_str(&env.ca()).into(),
        "-resp_text".into(),
    ])
    .await;
    assert!(text.contains("Response verify OK"), "{text}");
    text
}

async fn presigned_answers(db: Db) {
    let Some(env) = Env::new(db, "ocsp_presigned") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let (pem, serial) = party_cert(&s, "Ocsp.Shop@merchant.ocsp").await;
    let issuing = write_pem(&env, "issuing.pem", &s.app.svc.pki.issuing.info.pem);
    let leaf = write_pem(&env, "leaf.pem", &pem);
    let plain = request_file(&env, &issuing, &leaf, false, "plain").await;
    let nonced = request_file(&env, &issuing, &leaf, true, "nonced").await;
    let plain_der = std::fs::read(&plain).unwrap();

    // The first answer is signed once; then, with and without a nonce, over
    // HTTPS and plain HTTP, no signature at all.
    let first = post(&s.pki_base, plain_der.clone()).await;
    assert!(judge(&env, &plain, &first, "first")
        .await
        .contains("Cert Status: good"));
    let before = hsm_signatures(&s);
    for i in 0..20 {
        let body = if i % 2 == 0 {
            plain_der.clone()
        } else {
            std::fs::read(&nonced).unwrap()
        };
        let base = if i % 3 == 0 {
            s.base.clone()
        } else {
            s.pki_base.clone()
        };
        let https = if base.starts_with("https") {
            let mut res = s
                .anonymous()
                .post(format!("{base}/pki/ocsp"))
                .insert_header(("content-type", "application/ocsp-request"))
                .send_body(body)
                .await
                .unwrap();
            res.body().await.unwrap().to_vec()
        } else {
            post(&base, body).await
        };
        assert_eq!(https, first, "a cached answer is the same pre-signed bytes");
    }
    assert_eq!(
        hsm_signatures(&s),
        before,
        "cached answers cost no HSM signature"
    );

    // A status change is answered at once, with one signature.
    let (st, _, b) = post_json(
        &s.as_client("operator"),
        &s.url(&format!("/v1/admin/certificates/{serial}/revoke")),
        &json!({ "reason": "keyCompromise" }),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let revoked = post(&s.pki_base, plain_der.clone()).await;
    let text = judge(&env, &plain, &revoked, "revoked").await;
    assert!(text.contains("Cert Status: revoked"), "{text}");
    assert!(text.contains("Revocation Reason: keyCompromise"), "{text}");
    assert_eq!(hsm_signatures(&s), before + 1);
    post(&s.pki_base, plain_der.clone()).await;
    assert_eq!(hsm_signatures(&s), before + 1);

    // Past half its validity (ocsp_next_update_seconds = 3600), re-signed once.
    env.clock.advance(time::Duration::seconds(1801));
    let later = post(&s.pki_base, plain_der.clone()).await;
    assert_ne!(later, revoked);
    assert_eq!(hsm_signatures(&s), before + 2);
    assert!(judge(&env, &plain, &later, "later")
        .await
        .contains("Cert Status: revoked"));

    // GET /pki/ocsp/{url-encoded base64} answers the same.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&plain_der);
    let encoded = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let mut res = awc::Client::default()
        .get(format!("{}/pki/ocsp/{encoded}", s.pki_base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.body().await.unwrap().to_vec(), later);
    s.stop().await;
}
on_both_backends_async!(ocsp_presigned_answers, presigned_answers);

/// An `OCSPRequest` for the issuing CA with a nonce of `len` bytes.
fn request_with_nonce(s: &Served, serial_hex: &str, len: usize) -> Vec<u8> {
    use const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE;
    use x509_ocsp::{OcspRequest, Request, TbsRequest};
    let issuing = openssl::x509::X509::from_pem(s.app.svc.pki.issuing.info.pem.as_bytes()).unwrap();
    let name = issuing.subject_name().to_der().unwrap();
    let point = &s.app.svc.pki.issuing.point;
    let cert_id = x509_ocsp::CertId {
        hash_algorithm: spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ID_SHA_1,
            parameters: None,
        },
        issuer_name_hash: der::asn1::OctetString::new(openssl::sha::sha1(&name).to_vec()).unwrap(),
        issuer_key_hash: der::asn1::OctetString::new(openssl::sha::sha1(point).to_vec()).unwrap(),
        serial_number: x509_cert::serial_number::SerialNumber::new(
            &hex::decode(serial_hex).unwrap(),
        )
        .unwrap(),
    };
    let nonce = der::asn1::OctetString::new(vec![7u8; len])
        .unwrap()
        .to_der()
        .unwrap();
    let req = OcspRequest {
        tbs_request: TbsRequest {
            version: Default::default(),
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id,
                single_request_extensions: None,
            }],
            request_extensions: Some(vec![x509_cert::ext::Extension {
                extn_id: ID_PKIX_OCSP_NONCE,
                critical: false,
                extn_value: der::asn1::OctetString::new(nonce).unwrap(),
            }]),
        },
        optional_signature: None,
    };
    req.to_der().unwrap()
}

/// The responseStatus of a DER OCSPResponse.
fn response_status(der: &[u8]) -> x509_ocsp::OcspResponseStatus {
    x509_ocsp::OcspResponse::from_der(der)
        .unwrap()
        .response_status
}

async fn nonces(db: Db) {
    let Some(env) = Env::with(db, "ocsp_nonce_echo", &[("TMCS_PKI__OCSP_NONCE", "echo")]) else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let (pem, serial) = party_cert(&s, "Nonce.Shop@merchant.ocsp").await;
    let issuing = write_pem(&env, "issuing.pem", &s.app.svc.pki.issuing.info.pem);
    let leaf = write_pem(&env, "leaf.pem", &pem);
    // With "echo", a nonce comes back and verifies, each time signed anew.
    let nonced = request_file(&env, &issuing, &leaf, true, "nonced").await;
    let before = hsm_signatures(&s);
    let answer = post(&s.pki_base, std::fs::read(&nonced).unwrap()).await;
    let text = judge(&env, &nonced, &answer, "echo").await;
    assert!(text.contains("OCSP Nonce:"), "{text}");
    assert!(!text.contains("Nonce Verify error"), "{text}");
    assert!(!text.contains("WARNING: no nonce"), "{text}");
    post(&s.pki_base, std::fs::read(&nonced).unwrap()).await;
    assert_eq!(hsm_signatures(&s), before + 2);
    // 32 bytes are a nonce; 33 are not (RFC 8954).
    let ok = post(&s.pki_base, request_with_nonce(&s, &serial, 32)).await;
    assert_eq!(
        response_status(&ok),
        x509_ocsp::OcspResponseStatus::Successful
    );
    let long = post(&s.pki_base, request_with_nonce(&s, &serial, 33)).await;
    assert_eq!(
        response_status(&long),
        x509_ocsp::OcspResponseStatus::MalformedRequest
    );
    s.stop().await;
}
on_both_backends_async!(ocsp_nonces, nonces);

async fn plain_http_listener(db: Db) {
    let Some(env) = Env::new(db, "ocsp_plain_http") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let (pem, _) = party_cert(&s, "Http.Shop@merchant.ocsp").await;
    // Issued certificates name the public base URL (pki.public_base_url).
    let leaf = write_pem(&env, "leaf.pem", &pem);
    let (ok, text) = openssl_bg(vec![
        "x509".into(),
        "-in".into(),
        path_str(&leaf).into(),
        "-noout".into(),
        "-ocsp_uri".into(),
    ])
    .await;
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "http://localhost:8080/pki/ocsp");
    // openssl ocsp over plain HTTP, no TLS involved.
    let issuing = write_pem(&env, "issuing.pem", &s.app.svc.pki.issuing.info.pem);
    let (_, text) = openssl_bg(vec![
        "ocsp".into(),
        "-issuer".into(),
        path_str(&issuing).into(),
        "-cert".into(),
        path_str(&leaf).into(),
        "-url".into(),
        format!("{}/pki/ocsp", s.pki_base),
        "-CAfile".into(),
        path_str(&env.ca()).into(),
    ])
    .await;
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(text.contains(": good"), "{text}");
    // The CRL and the CA certificates too; nothing else.
    let c = awc::Client::default();
    let mut res = c
        .get(format!("{}/pki/crl", s.pki_base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        crate::support::content_type(res.headers()),
        "application/pkix-crl"
    );
    assert!(!res.body().await.unwrap().is_empty());
    let res = c
        .get(format!("{}/pki/ca.pem", s.pki_base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    for path in ["/healthz", "/v1/admin/subscribers", "/metrics"] {
        let res = c.get(format!("{}{path}", s.pki_base)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 404, "{path} on the plain listener");
    }
    s.stop().await;
}
on_both_backends_async!(ocsp_plain_http_listener, plain_http_listener);

/// Two nodes on one database: a revocation made by the other node reaches
/// this node's pre-signed answers within a second (PostgreSQL; SQLite is
/// one node).
#[actix_web::test]
async fn another_nodes_change_reaches_the_cache_postgres() {
    let Some(env) = Env::new(Db::Postgres, "ocsp_two_nodes") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let (pem, serial) = party_cert(&s, "Node.Shop@merchant.ocsp").await;
    let issuing = write_pem(&env, "issuing.pem", &s.app.svc.pki.issuing.info.pem);
    let leaf = write_pem(&env, "leaf.pem", &pem);
    let plain = request_file(&env, &issuing, &leaf, false, "plain").await;
    let der = std::fs::read(&plain).unwrap();
    let good = post(&s.pki_base, der.clone()).await;
    assert!(judge(&env, &plain, &good, "good")
        .await
        .contains("Cert Status: good"));
    // Another node revokes it: its committed change is all this process
    // sees of it (the database, not this process's change counter).
    {
        use diesel::{Connection, RunQueryDsl};
        let mut pg = diesel::PgConnection::establish(&env.cfg.database_url).unwrap();
        diesel::sql_query(format!(
            "UPDATE certificates SET status = 'revoked', revocation_reason = 'keyCompromise', \
             revoked_at = 1700000000 WHERE serial = '{serial}'"
        ))
        .execute(&mut pg)
        .unwrap();
        diesel::sql_query("UPDATE pki_state SET revocation_epoch = revocation_epoch + 1")
            .execute(&mut pg)
            .unwrap();
    }
    actix_web::rt::time::sleep(tmcs::pki::ocsp::EPOCH_POLL + std::time::Duration::from_millis(200))
        .await;
    let answer = post(&s.pki_base, der).await;
    assert!(judge(&env, &plain, &answer, "revoked")
        .await
        .contains("Cert Status: revoked"));
    s.stop().await;
}
