//! Evidence of one payment (CONTRACT §13, issue 12): a payment signed
//! through the real service (SoftHSM2, SQLite and PostgreSQL) gives a bundle
//! at `GET /v1/audit/evidence/{request_id}` that verifies offline, with
//! `tmcs audit evidence verify`'s checks and with `scripts/check-evidence.sh`
//! (the openssl CLI and sha256sum, the script docs/audit.md shows); one
//! changed byte in the iMS, the signature, the OCSP response, an event or
//! the tree head fails it, naming that part.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::on_both_backends_async;
use crate::signing::{problem, Fx, PIN};
use crate::support::{get_json, random_msisdn, Db};

/// An 8-digit PIN: a chance match in the bundle's hex and base64 is negligible.
const LONG_PIN: &str = "48291635";

/// A payment signed through the handset API; its request id.
async fn signed_payment(fx: &Fx) -> String {
    let msisdn = random_msisdn();
    let (h, _) = fx.s.active_subscriber(&msisdn, LONG_PIN).await;
    let m = fx.signed(&msisdn, "medium", "EUR125.00", "POS-9-000042");
    let id = fx.submit_ok(&m).await;
    let r = fx.authorize(&h, &id, LONG_PIN).await;
    assert_eq!(r.0, 200, "{}", r.2);
    id
}

async fn evidence_of(fx: &Fx, id: &str) -> (u16, String, Value) {
    get_json(
        &fx.s.as_client("auditor"),
        &fx.s.url(&format!("/v1/audit/evidence/{id}")),
    )
    .await
}

/// `ca.pem` and `audit.pem` of the data dir.
fn trust_files(fx: &Fx) -> (PathBuf, PathBuf) {
    (fx.env.ca(), fx.env.cfg.data_dir.join("audit.pem"))
}

fn verify(fx: &Fx, bundle: &Value) -> Result<tmcs::audit::evidence::Verified, String> {
    let (ca, audit) = trust_files(fx);
    tmcs::audit::evidence::verify(
        &serde_json::to_vec(bundle).unwrap(),
        &std::fs::read(ca).unwrap(),
        &std::fs::read(audit).unwrap(),
    )
    .map_err(|e| e.to_string())
}

/// The same kind of character, but another one (base64, hex and digits stay valid).
fn other_char(c: char) -> char {
    match c {
        '0' => '1',
        '9' => '8',
        'a' | 'A' => char::from(c as u8 + 1),
        'f' => 'e',
        'z' | 'Z' => char::from(c as u8 - 1),
        c if c.is_ascii_alphanumeric() => char::from(c as u8 - 1),
        '+' => '/',
        '/' => '+',
        c => panic!("no stand-in for {c:?}"),
    }
}

/// `s` with the byte at `at` changed (moved forward to the next
/// alphanumeric character).
fn change_at(s: &str, at: usize) -> String {
    let at = (at..s.len())
        .find(|&i| s.as_bytes()[i].is_ascii_alphanumeric())
        .expect("an alphanumeric character to change");
    let mut b = s.as_bytes().to_vec();
    b[at] = other_char(char::from(b[at])) as u8;
    String::from_utf8(b).unwrap()
}

/// The bundle with one byte of the string at JSON `pointer` changed.
fn tampered(bundle: &Value, pointer: &str, at: impl Fn(&str) -> usize) -> Value {
    let mut b = bundle.clone();
    let v = b
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer}"));
    let s = v.as_str().unwrap().to_string();
    *v = Value::String(change_at(&s, at(&s)));
    b
}

#[track_caller]
fn fails_naming(fx: &Fx, bundle: &Value, what: &str, part: &str) {
    let err = verify(fx, bundle).expect_err(what);
    assert!(
        err.starts_with("evidence: ") && err.to_lowercase().contains(&part.to_lowercase()),
        "{what}: {err}"
    );
}

/// `bash scripts/check-evidence.sh BUNDLE CA AUDIT`: (success, output).
fn check_script(dir: &Path, bundle: &Value, ca: &Path, audit: &Path) -> (bool, String) {
    let file = dir.join(format!("{}.json", crate::support::unique("bundle-")));
    std::fs::write(&file, serde_json::to_vec_pretty(bundle).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-evidence.sh");
    let o = std::process::Command::new("bash")
        .arg(script)
        .args([&file, ca, audit])
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&o.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

/// The bundle of a signed payment has the members of §13 and verifies; the
/// OCSP response was produced when it was signed; one changed byte of each
/// part is caught and named; the openssl script agrees.
async fn a_signed_payments_bundle_verifies_and_names_what_was_changed(db: Db) {
    let Some(fx) = Fx::start(db, "evidence_bundle_verifies").await else {
        return;
    };
    let id = signed_payment(&fx).await;
    let (st, ct, b) = evidence_of(&fx, &id).await;
    assert_eq!((st, ct.as_str()), (200, "application/json"), "{b}");
    let mut keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "c",
            "certificate",
            "chain",
            "events",
            "ims",
            "ocsp",
            "proofs",
            "request_id",
            "signature",
            "status",
            "sth",
        ]
    );
    assert_eq!(b["request_id"], id.as_str());
    assert_eq!(b["status"], "signed");
    let text = b.to_string();
    assert!(!text.contains(LONG_PIN), "the PIN is in the bundle");
    for key in [
        "\"pin\"",
        "\"pin_block\"",
        "\"activation_code\"",
        "PRIVATE KEY",
    ] {
        assert!(!text.contains(key), "{key} in the bundle");
    }
    // The stored request's signature and signed iMS, its events in seq order.
    let row = crate::signing::stored(&fx.s, &id);
    assert_eq!(b["signature"].as_str(), row.signature_b64.as_deref());
    assert_eq!(b["ims"].as_str(), row.signed_xml.as_deref());
    let actions: Vec<&str> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["request.received", "request.authorized", "request.signed"]
    );
    let sth_size = b["sth"]["tree_size"].as_i64().unwrap();
    for (e, p) in b["events"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["proofs"].as_array().unwrap())
    {
        assert_eq!(e["seq"], p["seq"]);
        assert!(e["seq"].as_i64().unwrap() <= sth_size);
    }

    // The whole bundle verifies, in order, in plain words.
    let v = verify(&fx, &b).unwrap();
    assert_eq!(v.request_id, id);
    assert_eq!(v.checks.len(), 8, "{:?}", v.checks);
    assert!(v.checks[3].contains("says good"), "{:?}", v.checks);

    // Its OCSP response is the one stored with the signature, produced
    // between the authorisation and the signature.
    let kept =
        fx.s.app
            .svc
            .store
            .read(|c| tmcs::store::evidence::get(c, &id))
            .unwrap()
            .expect("an OCSP response stored with the signature");
    assert_eq!(b["ocsp"].as_str(), Some(kept.ocsp_der_b64.as_str()));
    assert_eq!(
        Some(kept.produced_at),
        row.signed_at.map(|t| t.min(kept.produced_at))
    );

    // One changed byte of each part fails, naming it.
    let ims = b["ims"].as_str().unwrap();
    let amount = ims.find("<amount>").unwrap() + "<amount>EUR".len();
    fails_naming(&fx, &tampered(&b, "/ims", |_| amount), "the amount", "iMS");
    let stamp = ims.find("<timestamp>").unwrap() + "<timestamp>20".len() + 1;
    fails_naming(
        &fx,
        &tampered(&b, "/ims", |_| stamp),
        "the timestamp",
        "iMS",
    );
    let from_sign = ims.find("<from>").unwrap();
    let from_sign = from_sign + ims[from_sign..].find("<sign>").unwrap() + 20;
    fails_naming(
        &fx,
        &tampered(&b, "/ims", |_| from_sign),
        "from/sign",
        "iMS",
    );
    for at in [8, 40] {
        fails_naming(
            &fx,
            &tampered(&b, "/signature", |_| at),
            "signature",
            "signature",
        );
    }
    for frac in [10, 30, 50, 70, 95] {
        let bad = tampered(&b, "/ocsp", |s| s.len() * frac / 100);
        fails_naming(&fx, &bad, &format!("OCSP at {frac}%"), "OCSP response");
    }
    let signed_event = actions.iter().position(|a| *a == "request.signed").unwrap();
    for member in ["ts", "actor", "hash", "prev_hash"] {
        let bad = tampered(&b, &format!("/events/{signed_event}/{member}"), |s| {
            s.len() / 2
        });
        fails_naming(&fx, &bad, member, "event seq");
    }
    let bad = tampered(&b, "/events/0/details/dtbs_sha256", |s| s.len() / 2);
    fails_naming(&fx, &bad, "details", "event seq");
    for member in ["root_hash", "ts", "sig"] {
        let bad = tampered(&b, &format!("/sth/{member}"), |s| s.len() / 2);
        fails_naming(&fx, &bad, member, "tree head");
    }
    let mut bad = b.clone();
    bad["sth"]["tree_size"] = Value::from(sth_size + 1);
    fails_naming(&fx, &bad, "tree_size", "tree head");
    let bad = tampered(&b, "/proofs/0/audit_path/0", |s| s.len() / 2);
    fails_naming(&fx, &bad, "a proof", "inclusion proof");
    // Trusting another CA: the chain fails.
    let (ca, audit) = trust_files(&fx);
    let stranger = rcgen::CertificateParams::new(vec!["x".into()])
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap()
        .pem();
    let err = tmcs::audit::evidence::verify(
        &serde_json::to_vec(&b).unwrap(),
        stranger.as_bytes(),
        &std::fs::read(&audit).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("certificate: does not chain"), "{err}");

    // The openssl CLI and sha256sum agree: the bundle passes, a changed
    // signature does not.
    let (ok, out) = check_script(fx.env.path(), &b, &ca, &audit);
    assert!(ok, "{out}");
    for line in [
        "ok: the signature over C verifies",
        "ok: the certificate chains to the CA",
        "ok: the OCSP response verifies and says good",
        "ok: the request.signed event's hash recomputes",
        "is included in the tree head",
        "ok: the tree head is signed by the audit key",
    ] {
        assert!(out.contains(line), "{line}:\n{out}");
    }
    let (ok, out) = check_script(
        fx.env.path(),
        &tampered(&b, "/signature", |_| 40),
        &ca,
        &audit,
    );
    assert!(!ok && out.contains("Verification failure"), "{out}");
    let bad = tampered(&b, "/events/2/ts", |s| s.len() / 2);
    let (ok, out) = check_script(fx.env.path(), &bad, &ca, &audit);
    assert!(!ok && out.contains("FAILED: the event's hash"), "{out}");
    fx.finish().await;
}
on_both_backends_async!(
    a_signed_payments_bundle_verifies,
    a_signed_payments_bundle_verifies_and_names_what_was_changed
);

/// Unknown request: 404 `request.not_found`; never signed (pending,
/// declined): 409 `request.not_signed`; other roles: 403.
async fn evidence_refusals(db: Db) {
    let Some(fx) = Fx::start(db, "evidence_refusals").await else {
        return;
    };
    let r = evidence_of(&fx, "no-such-request").await;
    problem(&r, 404, "request.not_found");
    let msisdn = random_msisdn();
    let (h, _) = fx.s.active_subscriber(&msisdn, PIN).await;
    let m = fx.signed(&msisdn, "small", "EUR5.00", "POS-1-000001");
    let id = fx.submit_ok(&m).await;
    let r = evidence_of(&fx, &id).await;
    problem(&r, 409, "request.not_signed");
    assert!(
        r.2["detail"]
            .as_str()
            .unwrap()
            .contains("pending_authorization"),
        "{}",
        r.2
    );
    let r = get_json(
        &fx.fsp_client,
        &fx.s.url(&format!("/v1/audit/evidence/{id}")),
    )
    .await;
    problem(&r, 403, "auth.forbidden");
    // Declined: never signed either.
    let r = fx
        .handset_post(
            &h,
            &format!("/v1/handset/requests/{id}/decline"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.2);
    problem(&evidence_of(&fx, &id).await, 409, "request.not_signed");
    fx.finish().await;
}
on_both_backends_async!(evidence_refusals_are_problems, evidence_refusals);

/// docs/audit.md shows exactly `scripts/check-evidence.sh`, the script the
/// test above runs: the documentation cannot drift from what is tested.
#[test]
fn the_audit_doc_shows_the_tested_script() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/audit.md")).unwrap();
    let script = std::fs::read_to_string(root.join("scripts/check-evidence.sh")).unwrap();
    let start = doc
        .find("<!-- check-evidence.sh -->\n```bash\n")
        .expect("start marker")
        + "<!-- check-evidence.sh -->\n```bash\n".len();
    let end = doc
        .find("```\n<!-- /check-evidence.sh -->")
        .expect("end marker");
    assert_eq!(&doc[start..end], script);
}
