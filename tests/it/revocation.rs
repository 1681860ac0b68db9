//! CRL and OCSP (CONTRACT §9), judged by the openssl CLI: both follow a
//! certificate's state at once, without a restart.

use std::path::{Path, PathBuf};

use tmcs::pki::crl::CrlService;
use tmcs::store::certs::{self, CertRow};
use tmcs::store::revocation;

use crate::pkicheck::{
    crl_entry, crl_number, crl_text, fetch_crl, openssl_bg, path_str, write_pem,
};
use crate::support::{openssl, Db, Env, Served};
use crate::{on_both_backends, on_both_backends_async};

fn row_of(s: &Served, name: &str) -> CertRow {
    s.app
        .svc
        .store
        .read(|c| certs::current(c, name))
        .unwrap()
        .unwrap_or_else(|| panic!("no current certificate {name}"))
}

fn set_status(s: &Served, serial: &str, status: &str, reason: Option<&str>, at: Option<i64>) {
    let n = s
        .app
        .svc
        .store
        .write(|c| certs::set_status(c, serial, status.parse().unwrap(), reason, at))
        .unwrap();
    assert_eq!(n, 1, "set_status({serial}, {status})");
}

async fn crl_follows_the_lifecycle(db: Db) {
    let Some(env) = Env::new(db, "crl_follows_the_lifecycle") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let issuing = write_pem(&env, "issuing.pem", &s.app.svc.pki.issuing.info.pem);
    let validity =
        time::Duration::seconds(i64::try_from(env.cfg.file.pki.crl_next_update_seconds).unwrap());

    // Nothing revoked yet: a valid, empty CRL.
    let first = fetch_crl(&s).await;
    let text = crl_text(&env, &first, &issuing).await;
    assert!(text.contains("No Revoked Certificates"), "{text}");
    let n0 = crl_number(&text);

    let held = row_of(&s, "client:operator");
    let revoked = row_of(&s, "client:auditor");
    let good = row_of(&s, "client:fsp-demo");
    let now = env.now().unix_timestamp();
    set_status(&s, &held.serial, "suspended", None, Some(now));
    set_status(
        &s,
        &revoked.serial,
        "revoked",
        Some("keyCompromise"),
        Some(now),
    );

    let second = fetch_crl(&s).await;
    let text = crl_text(&env, &second, &issuing).await;
    let n1 = crl_number(&text);
    assert!(n1 > n0, "CRL number {n1} after {n0}");
    let e = crl_entry(&text, &held.serial);
    assert!(
        e.contains("Certificate Hold"),
        "held entry {e:?} in\n{text}"
    );
    let e = crl_entry(&text, &revoked.serial);
    assert!(
        e.contains("Key Compromise"),
        "revoked entry {e:?} in\n{text}"
    );
    assert!(crl_entry(&text, &good.serial).is_empty(), "{text}");

    // Unchanged state: the same bytes from the cache, and another node (a
    // fresh service on the same database) serves that very CRL too.
    assert_eq!(fetch_crl(&s).await, second);
    let other_node = CrlService::default();
    let from_db = other_node
        .current(&s.app.svc.store, &s.app.svc.pki, env.now(), validity)
        .unwrap();
    assert_eq!(from_db.as_slice(), second.as_slice());
    let (_, last) = s.app.svc.store.read(revocation::state).unwrap();
    assert_eq!(u64::try_from(last).unwrap(), n1);

    // Resumed: off the CRL at once, under a higher number.
    set_status(&s, &held.serial, "active", None, None);
    let third = fetch_crl(&s).await;
    let text = crl_text(&env, &third, &issuing).await;
    let n2 = crl_number(&text);
    assert!(n2 > n1, "CRL number {n2} after {n1}");
    assert!(crl_entry(&text, &held.serial).is_empty(), "{text}");
    assert!(crl_entry(&text, &revoked.serial).contains("Key Compromise"));

    // The other node notices the new CRL (newer number in the database).
    let from_db = other_node
        .current(&s.app.svc.store, &s.app.svc.pki, env.now(), validity)
        .unwrap();
    assert_eq!(from_db.as_slice(), third.as_slice());

    // Past half its validity a CRL is reissued even without changes.
    env.clock.advance(validity / 2 + time::Duration::seconds(1));
    let fourth = fetch_crl(&s).await;
    let text = crl_text(&env, &fourth, &issuing).await;
    let n3 = crl_number(&text);
    assert!(n3 > n2, "CRL number {n3} after {n2}");
    assert!(crl_entry(&text, &revoked.serial).contains("Key Compromise"));
    s.stop().await;
}
on_both_backends_async!(crl_follows_lifecycle, crl_follows_the_lifecycle);

/// Direct use, no server: numbers grow strictly over many rebuilds and two
/// services, and the CRL lists exactly the revoked and held certificates.
fn crl_numbers_grow_across_nodes(db: Db) {
    let Some(env) = Env::new(db, "crl_numbers_grow_across_nodes") else {
        return;
    };
    env.init();
    let app = env.app();
    let validity = time::Duration::hours(24);
    let a = CrlService::default();
    let b = CrlService::default();
    let tls = app
        .svc
        .store
        .read(|c| certs::current(c, tmcs::pki::names::TLS_SERVER))
        .unwrap()
        .unwrap();
    let mut last = 0;
    for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        let (status, reason) = if i % 2 == 0 {
            ("suspended", None)
        } else {
            ("revoked", Some("superseded"))
        };
        app.svc
            .store
            .write(|c| {
                certs::set_status(
                    c,
                    &tls.serial,
                    status.parse().unwrap(),
                    reason,
                    Some(1_700_000_000),
                )
            })
            .unwrap();
        let der = node
            .current(&app.svc.store, &app.svc.pki, env.now(), validity)
            .unwrap();
        let f = env.path().join(format!("crl{i}.der"));
        std::fs::write(&f, der.as_slice()).unwrap();
        let (ok, text) = openssl(&[
            "crl",
            "-inform",
            "DER",
            "-in",
            path_str(&f),
            "-CAfile",
            path_str(&env.ca()),
            "-noout",
            "-text",
        ]);
        assert!(ok && text.contains("verify OK"), "{text}");
        let n = crl_number(&text);
        assert!(n > last, "CRL number {n} after {last}");
        last = n;
        let e = crl_entry(&text, &tls.serial);
        let want = if i % 2 == 0 {
            "Certificate Hold"
        } else {
            "Superseded"
        };
        assert!(e.contains(want), "{want} in {e:?}\n{text}");
        assert!(
            text.contains("Revocation Date: Nov 14 22:13:20 2023 GMT"),
            "{text}"
        );
    }
    // The stored CRLs are all there, newest last.
    let latest = app.svc.store.read(revocation::latest_crl).unwrap().unwrap();
    assert_eq!(u64::try_from(latest.crl_number).unwrap(), last);
}
on_both_backends!(crl_numbers_grow, crl_numbers_grow_across_nodes);

/// The CRL number and listed serials (lowercase hex) of a DER CRL.
fn crl_facts(der: &[u8]) -> (u64, Vec<String>) {
    use der::Decode;
    use x509_cert::crl::CertificateList;
    use x509_cert::ext::pkix::CrlNumber;
    let crl = CertificateList::from_der(der).unwrap();
    let ext = crl
        .tbs_cert_list
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_CRL_NUMBER)
        .expect("CRL number");
    let n = CrlNumber::from_der(ext.extn_value.as_bytes()).unwrap();
    let n =
        n.0.as_bytes()
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let listed = crl
        .tbs_cert_list
        .revoked_certificates
        .iter()
        .flatten()
        .map(|r| hex::encode(r.serial_number.as_bytes()))
        .collect();
    (n, listed)
}

/// Two nodes (services) racing status changes and CRL fetches on one
/// database: every CRL a node gets after its own change is newer than the
/// one before it and reflects the change.
fn crl_nodes_race(db: Db) {
    let Some(env) = Env::new(db, "crl_nodes_race") else {
        return;
    };
    env.init();
    let app = env.app();
    let now = env.now();
    let serials: Vec<String> = ["client:operator", "client:auditor"]
        .iter()
        .map(|n| {
            app.svc
                .store
                .read(|c| certs::current(c, n))
                .unwrap()
                .unwrap()
                .serial
        })
        .collect();
    std::thread::scope(|scope| {
        for serial in &serials {
            let app = app.clone();
            scope.spawn(move || {
                let node = CrlService::default();
                let mut last = 0;
                for i in 0..6 {
                    let hold = i % 2 == 0;
                    let status = if hold { "suspended" } else { "active" };
                    app.svc
                        .store
                        .write(|c| {
                            certs::set_status(
                                c,
                                serial,
                                status.parse().unwrap(),
                                None,
                                Some(1_700_000_000),
                            )
                        })
                        .unwrap();
                    let der = node
                        .current(&app.svc.store, &app.svc.pki, now, time::Duration::hours(24))
                        .unwrap();
                    let (n, listed) = crl_facts(&der);
                    assert!(n > last, "CRL number {n} after {last}");
                    assert_eq!(listed.contains(serial), hold, "{serial} in {listed:?}");
                    last = n;
                }
            });
        }
    });
    // Every number taken was stored exactly once.
    let (_, last) = app.svc.store.read(revocation::state).unwrap();
    let latest = app.svc.store.read(revocation::latest_crl).unwrap().unwrap();
    assert_eq!(latest.crl_number, last);
}
on_both_backends!(crl_race, crl_nodes_race);

async fn post_ocsp(s: &Served, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let mut res = s
        .anonymous()
        .post(s.url("/pki/ocsp"))
        .insert_header(("content-type", "application/ocsp-request"))
        .send_body(body)
        .await
        .unwrap();
    let ct = crate::support::content_type(res.headers());
    let body = res.body().limit(1 << 20).await.unwrap().to_vec();
    (res.status().as_u16(), ct, body)
}

struct Ocsp<'a> {
    env: &'a Env,
    s: &'a Served,
    n: std::cell::Cell<u32>,
}

impl Ocsp<'_> {
    fn file(&self, what: &str) -> PathBuf {
        self.n.set(self.n.get() + 1);
        self.env.path().join(format!("{what}-{}.der", self.n.get()))
    }

    /// Asks about `cert` (issued by `issuer`) through the server; returns
    /// openssl's verdict on the saved response (verified against ca.pem or,
    /// with `va`, against the responder certificate itself).
    async fn ask(&self, issuer: &Path, cert: &Path, extra: &[&str], va: Option<&Path>) -> String {
        let req = self.file("req");
        // A digest option must come before -cert.
        let mut args: Vec<String> = vec!["ocsp".into()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend([
            "-issuer".into(),
            path_str(issuer).into(),
            "-cert".into(),
            path_str(cert).into(),
            "-reqout".into(),
            path_str(&req).into(),
            "-no_nonce".into(),
        ]);
        let (ok, out) = openssl_bg(args).await;
        assert!(ok, "{out}");
        let (st, ct, body) = post_ocsp(self.s, std::fs::read(&req).unwrap()).await;
        assert_eq!((st, ct.as_str()), (200, "application/ocsp-response"));
        let resp = self.file("resp");
        std::fs::write(&resp, &body).unwrap();
        let mut args: Vec<String> = vec!["ocsp".into()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend([
            "-respin".into(),
            path_str(&resp).into(),
            "-issuer".into(),
            path_str(issuer).into(),
            "-cert".into(),
            path_str(cert).into(),
            "-no_nonce".into(),
            "-resp_text".into(),
        ]);
        match va {
            Some(va) => args.extend(["-VAfile".into(), path_str(va).into()]),
            None => args.extend(["-CAfile".into(), path_str(&self.env.ca()).into()]),
        }
        let (_, text) = openssl_bg(args).await;
        assert!(text.contains("Response verify OK"), "{text}");
        text
    }
}

fn throwaway_ca_and_leaf(env: &Env) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(vec![]).unwrap();
    // The issuing CA's very name, but another key.
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::OrganizationName, "tmcs");
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "tmcs Issuing CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["stranger.example".into()])
        .unwrap()
        .signed_by(&leaf_key, &Issuer::new(ca, ca_key))
        .unwrap();
    (
        write_pem(env, "stranger-ca.pem", &ca_cert.pem()),
        write_pem(env, "stranger.pem", &leaf.pem()),
    )
}

async fn ocsp_answers_for_the_issuing_ca(db: Db) {
    let Some(env) = Env::new(db, "ocsp_answers_for_the_issuing_ca") else {
        return;
    };
    env.init();
    let s = Served::start(&env);
    let q = Ocsp {
        env: &env,
        s: &s,
        n: std::cell::Cell::new(0),
    };
    let issuing = write_pem(&env, "issuing.pem", &s.app.svc.pki.issuing.info.pem);
    let root = write_pem(&env, "root.pem", &s.app.svc.pki.root.info.pem);
    let responder = write_pem(&env, "ocsp.pem", &s.app.svc.pki.ocsp.info.pem);
    let leaf = env.client_files("operator").0;
    let other = env.client_files("auditor").0;
    let leaf_row = row_of(&s, "client:operator");
    let other_row = row_of(&s, "client:auditor");

    // Good, with SHA-1 CertIDs (openssl's default) and SHA-256 ones.
    let text = q.ask(&issuing, &leaf, &[], None).await;
    assert!(
        text.contains(&format!("{}: good", leaf.display())),
        "{text}"
    );
    // byKey: SHA-1 of the responder certificate's public key bits.
    let key_id = hex::encode_upper(openssl::sha::sha1(&s.app.svc.pki.ocsp.point));
    assert!(
        text.contains(&format!("Responder Id: {key_id}")),
        "{key_id} in {text}"
    );
    assert!(text.contains("Next Update:"), "{text}");
    let text = q.ask(&issuing, &leaf, &["-sha256"], None).await;
    assert!(
        text.contains(&format!("{}: good", leaf.display())),
        "{text}"
    );
    assert!(text.contains("Hash Algorithm: sha256"), "{text}");

    // On hold, then resumed: visible at once.
    let held_at = env.now().unix_timestamp();
    set_status(&s, &leaf_row.serial, "suspended", None, Some(held_at));
    let text = q.ask(&issuing, &leaf, &[], None).await;
    assert!(
        text.contains(&format!("{}: revoked", leaf.display())),
        "{text}"
    );
    assert!(text.contains("Reason: certificateHold"), "{text}");
    set_status(&s, &leaf_row.serial, "active", None, None);
    let text = q.ask(&issuing, &leaf, &[], None).await;
    assert!(
        text.contains(&format!("{}: good", leaf.display())),
        "{text}"
    );

    // Revoked with its reason and time.
    set_status(
        &s,
        &other_row.serial,
        "revoked",
        Some("keyCompromise"),
        Some(1_700_000_000),
    );
    let text = q.ask(&issuing, &other, &[], None).await;
    assert!(
        text.contains(&format!("{}: revoked", other.display())),
        "{text}"
    );
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    assert!(
        text.contains("Revocation Time: Nov 14 22:13:20 2023 GMT"),
        "{text}"
    );
    // Expired after being revoked: still revoked. Expired otherwise: good.
    set_status(
        &s,
        &other_row.serial,
        "expired",
        Some("keyCompromise"),
        Some(1_700_000_000),
    );
    let text = q.ask(&issuing, &other, &[], None).await;
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    set_status(&s, &leaf_row.serial, "expired", None, None);
    let text = q.ask(&issuing, &leaf, &[], None).await;
    assert!(
        text.contains(&format!("{}: good", leaf.display())),
        "{text}"
    );

    // Unknown: a serial tmcs never issued under the issuing CA, the root's
    // serial asked of the issuing CA, the issuing CA asked of the root, and a
    // stranger's certificate (same CA name, other key).
    let text = q.ask(&root, &issuing, &[], Some(&responder)).await;
    assert!(
        text.contains(&format!("{}: unknown", issuing.display())),
        "{text}"
    );
    let (stranger_ca, stranger) = throwaway_ca_and_leaf(&env);
    let ours = q.ask(&issuing, &leaf, &[], None).await;
    let text = q.ask(&stranger_ca, &stranger, &[], Some(&responder)).await;
    let hash_of = |t: &str, h: &str| {
        t.lines()
            .find(|l| l.contains(h))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert_eq!(
        hash_of(&ours, "Issuer Name Hash:"),
        hash_of(&text, "Issuer Name Hash:")
    );
    assert_ne!(
        hash_of(&ours, "Issuer Key Hash:"),
        hash_of(&text, "Issuer Key Hash:")
    );
    assert!(
        text.contains(&format!("{}: unknown", stranger.display())),
        "{text}"
    );
    for serial in [
        "0x0123456789abcdef",
        &format!("0x{}", s.app.svc.pki.root.info.serial_hex),
    ] {
        let req = q.file("req");
        let (ok, out) = openssl_bg(vec![
            "ocsp".into(),
            "-issuer".into(),
            path_str(&issuing).into(),
            "-serial".into(),
            serial.to_string(),
            "-reqout".into(),
            path_str(&req).into(),
            "-no_nonce".into(),
        ])
        .await;
        assert!(ok, "{out}");
        let (_, _, body) = post_ocsp(&s, std::fs::read(&req).unwrap()).await;
        let resp = q.file("resp");
        std::fs::write(&resp, &body).unwrap();
        let (_, text) = openssl_bg(vec![
            "ocsp".into(),
            "-respin".into(),
            path_str(&resp).into(),
            "-CAfile".into(),
            path_str(&env.ca()).into(),
            "-resp_text".into(),
        ])
        .await;
        assert!(text.contains("Response verify OK"), "{serial}: {text}");
        assert!(text.contains("Cert Status: unknown"), "{serial}: {text}");
    }

    // A nonce is ignored by default (pki.ocsp_nonce = "ignore", RFC 8954
    // §2.1): the answer comes from the pre-signed cache, carries no nonce,
    // and verifies (tests/it/ocsp.rs checks the "echo" setting).
    let req = q.file("req");
    let (ok, out) = openssl_bg(vec![
        "ocsp".into(),
        "-issuer".into(),
        path_str(&issuing).into(),
        "-cert".into(),
        path_str(&other).into(),
        "-reqout".into(),
        path_str(&req).into(),
    ])
    .await;
    assert!(ok, "{out}");
    let (_, _, body) = post_ocsp(&s, std::fs::read(&req).unwrap()).await;
    let resp = q.file("resp");
    std::fs::write(&resp, &body).unwrap();
    let (_, text) = openssl_bg(vec![
        "ocsp".into(),
        "-reqin".into(),
        path_str(&req).into(),
        "-respin".into(),
        path_str(&resp).into(),
        "-CAfile".into(),
        path_str(&env.ca()).into(),
        "-resp_text".into(),
    ])
    .await;
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(!text.contains("OCSP Nonce:"), "{text}");
    assert!(text.contains("WARNING: no nonce in response"), "{text}");

    // Garbage in: a DER OCSPResponse saying malformedRequest.
    let (st, ct, body) = post_ocsp(&s, b"this is not an OCSP request".to_vec()).await;
    assert_eq!((st, ct.as_str()), (200, "application/ocsp-response"));
    let resp = q.file("garbage");
    std::fs::write(&resp, &body).unwrap();
    let (_, text) = openssl_bg(vec![
        "ocsp".into(),
        "-respin".into(),
        path_str(&resp).into(),
        "-resp_text".into(),
        "-noverify".into(),
    ])
    .await;
    assert!(text.contains("malformedrequest (1)"), "{text}");
    // Oversized bodies are refused before any parsing.
    let (st, _, _) = post_ocsp(&s, vec![0x30; 64 * 1024]).await;
    assert_eq!(st, 413);

    // The real client path: openssl ocsp -url against the running server.
    set_status(&s, &leaf_row.serial, "active", None, None);
    let (_, text) = openssl_bg(vec![
        "ocsp".into(),
        "-issuer".into(),
        path_str(&issuing).into(),
        "-cert".into(),
        path_str(&leaf).into(),
        "-cert".into(),
        path_str(&other).into(),
        "-url".into(),
        s.url("/pki/ocsp"),
        "-CAfile".into(),
        path_str(&env.ca()).into(),
    ])
    .await;
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(
        text.contains(&format!("{}: good", leaf.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: revoked", other.display())),
        "{text}"
    );
    s.stop().await;
}
on_both_backends_async!(ocsp_responder, ocsp_answers_for_the_issuing_ca);
