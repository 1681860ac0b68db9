//! Shared openssl-CLI judges for certificates, CRLs and OCSP.

use std::path::{Path, PathBuf};

use crate::support::{openssl, Env, Served};

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs openssl off the actix thread (the server under test shares the runtime).
pub async fn openssl_bg(args: Vec<String>) -> (bool, String) {
    actix_web::rt::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        openssl(&args)
    })
    .await
    .unwrap()
}

/// The hex lines below the first line containing `header` (AKI, SKI, CRL number).
pub fn value_after(text: &str, header: &str) -> String {
    let mut lines = text.lines().skip_while(|l| !l.contains(header));
    lines.next();
    lines
        .next()
        .map(|l| l.trim().trim_start_matches("keyid:").to_string())
        .unwrap_or_default()
}

pub fn crl_number(text: &str) -> u64 {
    value_after(text, "X509v3 CRL Number")
        .parse()
        .unwrap_or_else(|_| panic!("no CRL number in\n{text}"))
}

/// The entry of `serial` in `openssl crl -text` output (serial line up to
/// the next one), empty when not listed.
pub fn crl_entry(text: &str, serial: &str) -> String {
    let needle = format!("Serial Number: {}", serial.to_uppercase());
    match text.find(&needle) {
        None => String::new(),
        Some(at) => {
            let rest = &text[at + needle.len()..];
            let end = rest.find("Serial Number:").unwrap_or(rest.len());
            rest[..end].to_string()
        }
    }
}

pub async fn fetch_crl(s: &Served) -> Vec<u8> {
    let mut res = s.anonymous().get(s.url("/pki/crl")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let ct = crate::support::content_type(res.headers());
    assert_eq!(ct, "application/pkix-crl");
    res.body().limit(1 << 20).await.unwrap().to_vec()
}

/// Checks signature, CRL number, next update and AKI; returns the text.
pub async fn crl_text(env: &Env, der: &[u8], issuing: &Path) -> String {
    let f = env.path().join("crl.der");
    std::fs::write(&f, der).unwrap();
    let (ok, text) = openssl_bg(vec![
        "crl".into(),
        "-inform".into(),
        "DER".into(),
        "-in".into(),
        path_str(&f).into(),
        "-CAfile".into(),
        path_str(&env.ca()).into(),
        "-noout".into(),
        "-text".into(),
    ])
    .await;
    assert!(ok && text.contains("verify OK"), "{text}");
    assert!(text.contains("Version 2"), "{text}");
    assert!(text.contains("Next Update:"), "{text}");
    crl_number(&text);
    let (ok, ski) = openssl(&[
        "x509",
        "-in",
        path_str(issuing),
        "-noout",
        "-ext",
        "subjectKeyIdentifier",
    ]);
    assert!(ok, "{ski}");
    let ski = value_after(&ski, "Subject Key Identifier");
    assert!(ski.len() >= 20, "SKI {ski:?}");
    assert_eq!(
        value_after(&text, "Authority Key Identifier"),
        ski,
        "the CRL's AKI must be the issuing CA's SKI\n{text}"
    );
    text
}

pub fn write_pem(env: &Env, name: &str, pem: &str) -> PathBuf {
    let p = env.path().join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

/// `openssl ocsp -url …/pki/ocsp -CAfile ca.pem` for `leaf_pem` against the
/// running server. Asserts the response verifies; returns openssl's output.
pub async fn ocsp_via_url(env: &Env, s: &Served, leaf_pem: &str) -> String {
    let issuing = write_pem(env, "ocsp-issuing.pem", &s.app.svc.pki.issuing.info.pem);
    let leaf = write_pem(env, "ocsp-leaf.pem", leaf_pem);
    let (_, text) = openssl_bg(vec![
        "ocsp".into(),
        "-issuer".into(),
        path_str(&issuing).into(),
        "-cert".into(),
        path_str(&leaf).into(),
        "-url".into(),
        s.url("/pki/ocsp"),
        "-CAfile".into(),
        path_str(&env.ca()).into(),
    ])
    .await;
    assert!(text.contains("Response verify OK"), "{text}");
    text
}

/// The verified CRL's text from the running server.
pub async fn served_crl_text(env: &Env, s: &Served) -> String {
    let der = fetch_crl(s).await;
    let issuing = write_pem(env, "crl-issuing.pem", &s.app.svc.pki.issuing.info.pem);
    crl_text(env, &der, &issuing).await
}
