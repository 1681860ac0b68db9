//! Offline verification of an evidence bundle (CONTRACT §13): no database,
//! no HSM, no network; the CA certificates and the audit certificate are
//! the only things trusted. The checks run in a fixed order and the first
//! failure is named by the part of the bundle it concerns.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::ocsp::{OcspCertId, OcspCertStatus, OcspFlag, OcspResponse, OcspResponseStatus};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509StoreContext, X509};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{Bundle, AUTHORIZED_ACTION, SIGNED_ACTION};
use crate::audit::merkle;
use crate::audit::Event;
use crate::ims::ImsMessage;

/// The first check that failed: which part of the bundle, and why.
#[derive(Debug, thiserror::Error)]
#[error("evidence: {part}: {detail}")]
pub struct EvidenceError {
    pub part: String,
    pub detail: String,
}

fn fail(part: impl Into<String>, detail: impl Into<String>) -> EvidenceError {
    EvidenceError {
        part: part.into(),
        detail: detail.into(),
    }
}

/// What was checked, one plain sentence per check, in order.
#[derive(Debug, Clone)]
pub struct Verified {
    pub request_id: String,
    pub checks: Vec<String>,
}

fn unb64(part: &str, s: &str) -> Result<Vec<u8>, EvidenceError> {
    STANDARD
        .decode(s.trim())
        .map_err(|e| fail(part, format!("not base64: {e}")))
}

fn time_of(part: &str, ts: &str) -> Result<OffsetDateTime, EvidenceError> {
    OffsetDateTime::parse(ts, &Rfc3339).map_err(|e| fail(part, format!("ts {ts:?}: {e}")))
}

/// A store trusting `anchors`, verifying as of `at`.
fn store_at(anchors: &[X509], at: OffsetDateTime) -> Result<X509Store, EvidenceError> {
    let build = || -> Result<X509Store, openssl::error::ErrorStack> {
        let mut b = X509StoreBuilder::new()?;
        for a in anchors {
            b.add_cert(a.clone())?;
        }
        let mut param = X509VerifyParam::new()?;
        param.set_time(at.unix_timestamp());
        b.set_param(&param)?;
        Ok(b.build())
    };
    build().map_err(|e| fail("CA certificates", e.to_string()))
}

/// Whether `cert` chains to `anchors` at `at` (through `untrusted`); the
/// verifier's reason otherwise.
fn chains(
    cert: &X509,
    untrusted: &[X509],
    anchors: &[X509],
    at: OffsetDateTime,
) -> Result<Result<(), String>, EvidenceError> {
    let store = store_at(anchors, at)?;
    let run = || -> Result<Result<(), String>, openssl::error::ErrorStack> {
        let mut chain = Stack::new()?;
        for c in untrusted {
            chain.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        ctx.init(&store, cert, &chain, |c| {
            Ok(if c.verify_cert()? {
                Ok(())
            } else {
                Err(c.error().error_string().to_string())
            })
        })
    };
    run().map_err(|e| fail("certificate", e.to_string()))
}

fn gentime_secs(t: &x509_ocsp::OcspGeneralizedTime) -> i64 {
    i64::try_from(t.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

fn words_time(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Verifies `bundle_json` against the CA certificates `ca_pem` (the trust
/// anchor, e.g. `<data>/ca.pem`) and the audit certificate `audit_pem`.
pub fn verify(
    bundle_json: &[u8],
    ca_pem: &[u8],
    audit_pem: &[u8],
) -> Result<Verified, EvidenceError> {
    let b: Bundle = serde_json::from_slice(bundle_json)
        .map_err(|e| fail("bundle", format!("not an evidence bundle: {e}")))?;
    let anchors = X509::stack_from_pem(ca_pem)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| fail("CA certificates", "no PEM certificate in --ca"))?;
    let audit_cert = X509::from_pem(audit_pem)
        .map_err(|e| fail("audit certificate", format!("not a PEM certificate: {e}")))?;
    let mut checks = Vec::new();
    let subject = crate::signing::subject(&b.request_id);

    // 1. C is the canonical signing input of the iMS.
    let ims = ImsMessage::parse(b.ims.as_bytes())
        .map_err(|e| fail("iMS", format!("does not parse: {e}")))?;
    let c = unb64("C", &b.c)?;
    let recomputed = ims
        .canonical_c()
        .map_err(|e| fail("iMS", format!("has no canonical signing input: {e}")))?;
    if recomputed != c {
        return Err(fail(
            "iMS",
            "C recomputed from the iMS (CONTRACT §5, ims-c1) is not the bundle's c: the iMS or c was changed",
        ));
    }
    checks.push(format!(
        "C ({} bytes) is the canonical signing input (ims-c1) of the iMS, recomputed from it",
        c.len()
    ));

    // 2. The signature over C with the certificate's key, and it is the iMS's from/sign.
    let sig = unb64("signature", &b.signature)?;
    let cert = X509::from_pem(b.certificate.as_bytes())
        .map_err(|e| fail("certificate", format!("not a PEM certificate: {e}")))?;
    let key = cert
        .public_key()
        .map_err(|e| fail("certificate", format!("no usable public key: {e}")))?;
    if !crate::pki::sha256_signature_verifies(&key, &c, &sig) {
        return Err(fail(
            "signature",
            "does not verify over C with the certificate's public key",
        ));
    }
    if ims.from_sign.as_deref() != Some(sig.as_slice()) {
        return Err(fail(
            "iMS",
            "its from/sign is not the bundle's signature: the iMS was changed",
        ));
    }
    let info =
        crate::pki::CertInfo::from_x509(&cert).map_err(|e| fail("certificate", e.to_string()))?;
    let (serial, cn) = (info.serial_hex, info.common_name);
    checks.push(format!(
        "the payer's signature over C verifies with the certificate's key (CN={cn}, serial {serial}), and it is the iMS's from/sign"
    ));

    // The signing event places everything in time: its hash is checked
    // before its time is used (its details are checked last).
    let in_request = |action: &str| -> Result<Option<&Event>, EvidenceError> {
        let found = b
            .events
            .iter()
            .find(|e| e.action == action && e.subject.as_deref() == Some(subject.as_str()));
        if let Some(e) = found {
            event_hash_recomputes(e)?;
        }
        Ok(found)
    };
    let signed = in_request(SIGNED_ACTION)?.ok_or_else(|| {
        fail(
            "events",
            format!("no {SIGNED_ACTION} event with subject {subject}"),
        )
    })?;
    let signed_at = time_of(&format!("event seq {}", signed.seq), &signed.ts)?;

    // 3. The certificate chains to the CA, as of the signing time.
    let chain = X509::stack_from_pem(b.chain.as_bytes())
        .map_err(|e| fail("chain", format!("not PEM certificates: {e}")))?;
    if let Err(why) = chains(&cert, &chain, &anchors, signed_at)? {
        return Err(fail(
            "certificate",
            format!("does not chain to the CA certificates given with --ca at the signing time {}: {why}", signed.ts),
        ));
    }
    checks.push(format!(
        "the certificate chains to the CA certificates given (--ca), valid at the signing time {}",
        signed.ts
    ));

    // 4. The OCSP response: signed by a responder the CA authorised, for
    // this certificate, good, produced at signing time.
    let part = "OCSP response";
    let der = unb64(
        part,
        b.ocsp.as_deref().ok_or_else(|| {
            fail(
                part,
                "missing (the request was signed before tmcs kept one)",
            )
        })?,
    )?;
    let resp = OcspResponse::from_der(&der).map_err(|e| fail(part, format!("not DER: {e}")))?;
    if resp.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(fail(part, "its responseStatus is not successful"));
    }
    let basic = resp
        .basic()
        .map_err(|e| fail(part, format!("no basic response: {e}")))?;
    let issuer = chain
        .iter()
        .chain(anchors.iter())
        .find(|i| {
            i.issued(&cert) == openssl::x509::X509VerifyResult::OK
                && i.public_key()
                    .and_then(|k| cert.verify(&k))
                    .unwrap_or(false)
        })
        .ok_or_else(|| fail("certificate", "its issuer is in neither the chain nor --ca"))?;
    let store = store_at(&anchors, signed_at)?;
    let none = Stack::new().map_err(|e| fail(part, e.to_string()))?;
    basic
        .verify(&none, &store, OcspFlag::empty())
        .map_err(|e| {
            fail(
                part,
                format!("its signature, or its responder's certificate and authorisation by the CA, does not verify: {e}"),
            )
        })?;
    let id = OcspCertId::from_cert(MessageDigest::sha1(), &cert, issuer)
        .map_err(|e| fail(part, e.to_string()))?;
    let status = basic.find_status(&id).ok_or_else(|| {
        fail(
            part,
            format!("has no answer for this certificate (serial {serial})"),
        )
    })?;
    if status.status != OcspCertStatus::GOOD {
        return Err(fail(part, "the certificate's status in it is not good"));
    }
    // Its times, read with x509-ocsp (the openssl crate does not expose producedAt).
    let parsed = {
        use der::Decode;
        let r = x509_ocsp::OcspResponse::from_der(&der).map_err(|e| fail(part, e.to_string()))?;
        let bytes = r
            .response_bytes
            .ok_or_else(|| fail(part, "no response bytes"))?;
        x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes())
            .map_err(|e| fail(part, e.to_string()))?
    };
    let produced = gentime_secs(&parsed.tbs_response_data.produced_at);
    let single = parsed
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            crate::pki::cert::normalize_serial(&hex::encode(r.cert_id.serial_number.as_bytes()))
                .as_deref()
                == Some(serial.as_str())
        })
        .ok_or_else(|| fail(part, format!("has no answer for serial {serial}")))?;
    let this_update = gentime_secs(&single.this_update);
    let next_update = single.next_update.as_ref().map(gentime_secs);
    let signed_secs = signed_at.unix_timestamp();
    // Produced between the claim (PIN checked, `request.authorized`) and
    // the stored signature: whole seconds, as OCSP times are.
    let earliest = match in_request(AUTHORIZED_ACTION)? {
        Some(a) => time_of(&format!("event seq {}", a.seq), &a.ts)?.unix_timestamp(),
        None => signed_secs - 300,
    };
    if this_update > signed_secs || produced > signed_secs {
        return Err(fail(
            part,
            format!(
                "produced {} (thisUpdate {}), after the signature {}",
                words_time(produced),
                words_time(this_update),
                signed.ts
            ),
        ));
    }
    if produced < earliest {
        return Err(fail(
            part,
            format!(
                "produced {}, before the request was authorised: not at signing time",
                words_time(produced)
            ),
        ));
    }
    if next_update.is_some_and(|n| n < signed_secs) {
        return Err(fail(part, "its nextUpdate is before the signature"));
    }
    checks.push(format!(
        "the OCSP response is signed by a responder the CA authorised, is for this certificate (serial {serial}), says good, and was produced {} at signing time (thisUpdate at or before the signature {})",
        words_time(produced),
        signed.ts
    ));

    // 5. Every event's hash recomputes, and each is about this request.
    let mut last = 0;
    for e in &b.events {
        let part = format!("event seq {}", e.seq);
        event_hash_recomputes(e)?;
        if e.subject.as_deref() != Some(subject.as_str()) {
            return Err(fail(part, format!("its subject is not {subject}")));
        }
        if e.seq <= last {
            return Err(fail(part, "events are not in ascending seq order"));
        }
        last = e.seq;
    }
    checks.push(format!(
        "{} events about {subject} (seq {}): each hash recomputes",
        b.events.len(),
        b.events
            .iter()
            .map(|e| e.seq.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // 6. The tree head is signed by the audit key (a changed tree head is
    // named here, before any proof is walked to its root).
    let sth = &b.sth;
    let audit_key = audit_cert
        .public_key()
        .map_err(|e| fail("audit certificate", e.to_string()))?;
    if !sth.signature_verifies(&audit_key) {
        return Err(fail(
            "tree head",
            "its signature does not verify with the audit certificate",
        ));
    }
    let sth_at = time_of("tree head", &sth.ts)?;
    if let Err(why) = chains(&audit_cert, &chain, &anchors, sth_at)? {
        return Err(fail(
            "audit certificate",
            format!("does not chain to the CA certificates given with --ca: {why}"),
        ));
    }
    let root = merkle::parse_hash(&sth.root_hash)
        .ok_or_else(|| fail("tree head", "root_hash is not 64 hex digits"))?;
    checks.push(format!(
        "the tree head (tree_size {}, root {}, {}) is signed by the audit key, whose certificate chains to the CA",
        sth.tree_size, sth.root_hash, sth.ts
    ));

    // 7. Each event is included in the tree head.
    if b.proofs.len() != b.events.len() {
        return Err(fail(
            "proofs",
            format!("{} proofs for {} events", b.proofs.len(), b.events.len()),
        ));
    }
    let n = u64::try_from(sth.tree_size).map_err(|_| fail("tree head", "negative tree_size"))?;
    for (e, p) in b.events.iter().zip(&b.proofs) {
        let part = format!("inclusion proof of event seq {}", e.seq);
        if p.seq != e.seq {
            return Err(fail(part, format!("is for seq {}", p.seq)));
        }
        let leaf = merkle::parse_hash(&e.hash)
            .map(|h| merkle::leaf_hash(&h))
            .ok_or_else(|| fail(format!("event seq {}", e.seq), "hash is not hex"))?;
        let path = p
            .audit_path
            .iter()
            .map(|h| merkle::parse_hash(h))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| fail(&part, "a path entry is not 64 hex digits"))?;
        let m = u64::try_from(e.seq - 1).map_err(|_| fail(&part, "seq below 1"))?;
        if merkle::root_from_inclusion(m, n, &leaf, &path) != Some(root) {
            return Err(fail(
                part,
                format!(
                    "does not lead to the tree head's root_hash (tree_size {})",
                    sth.tree_size
                ),
            ));
        }
    }
    checks.push(
        "each event is included in that tree head (RFC 9162 inclusion proofs, leaf = SHA-256(0x00 || event hash))"
            .to_string(),
    );

    // 8. The signing event records this certificate, this signature and this C.
    let part = format!("{SIGNED_ACTION} event (seq {})", signed.seq);
    check_signed_event(signed, &serial, &sig, &c)
        .map_err(|what| fail(&part, format!("its {what} does not match the bundle's")))?;
    checks.push(format!(
        "the {SIGNED_ACTION} event (seq {}, {}) names this certificate, the SHA-256 of this signature and of C",
        signed.seq, signed.ts
    ));
    Ok(Verified {
        request_id: b.request_id,
        checks,
    })
}

/// Which detail of the signing event differs, if any.
fn check_signed_event(e: &Event, serial: &str, sig: &[u8], c: &[u8]) -> Result<(), &'static str> {
    let d = &e.details;
    let cert = d["certificate"]
        .as_str()
        .and_then(crate::pki::cert::normalize_serial);
    if cert.as_deref() != Some(serial) {
        return Err("certificate (serial)");
    }
    if d["signature_sha256"].as_str() != Some(&hex::encode(openssl::sha::sha256(sig))) {
        return Err("signature_sha256");
    }
    if d["dtbs_sha256"].as_str() != Some(&URL_SAFE_NO_PAD.encode(openssl::sha::sha256(c))) {
        return Err("dtbs_sha256 (SHA-256 of C)");
    }
    Ok(())
}

fn event_hash_recomputes(e: &Event) -> Result<(), EvidenceError> {
    let part = format!("event seq {}", e.seq);
    let h = e
        .compute_hash()
        .map_err(|err| fail(&part, err.to_string()))?;
    if h != e.hash {
        return Err(fail(
            part,
            "its hash does not recompute (SHA-256 of its RFC 8785 form): the event was changed",
        ));
    }
    Ok(())
}
