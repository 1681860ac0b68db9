//! Evidence of one payment (CONTRACT §13): everything an auditor needs to
//! show, offline and months later, that the payer's key signed exactly this
//! iMS, with a certificate that chained to the tmcs CA and was good at that
//! moment, and that the request's audit events are in the signed log.
//!
//! * [`bundle`]: `GET /v1/audit/evidence/{request_id}`;
//! * [`verify`]: `tmcs audit evidence verify FILE --ca … --audit-cert …`.

pub mod verify;

use serde::{Deserialize, Serialize};

use super::merkle::SignedTreeHead;
use super::tree;
use super::{AuditError, Event};
use crate::app::Services;
use crate::error::{internal, reject, DomainResult, Problem};
use crate::store::audit_rows::{self, EventFilter};
use crate::store::{certs, evidence, requests};

pub use verify::{verify, EvidenceError, Verified};

/// The action of the event that records the signature.
pub const SIGNED_ACTION: &str = "request.signed";
/// The action of the event that records the claim (PIN checked).
pub const AUTHORIZED_ACTION: &str = "request.authorized";

/// The inclusion proof of one event in [`Bundle::sth`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub seq: i64,
    /// RFC 9162 §2.1.3 audit path, leaf to root, hex.
    pub audit_path: Vec<String>,
}

/// `GET /v1/audit/evidence/{request_id}` (CONTRACT §13).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    pub request_id: String,
    /// The request's status when the bundle was made.
    pub status: String,
    /// The fully signed iMS (XML).
    pub ims: String,
    /// Base64 of `C`, the canonical signing input (`ims-c1`).
    pub c: String,
    /// Base64 DER of the payer's signature over `C`.
    pub signature: String,
    /// The payer's certificate that signed (PEM).
    pub certificate: String,
    /// The issuing CA, then the root (PEM).
    pub chain: String,
    /// Base64 DER of the OCSP response for the payer's certificate that
    /// tmcs produced when it signed; `null` only for requests signed before
    /// tmcs kept one (migration 000012).
    pub ocsp: Option<String>,
    /// Every audit event whose subject is `request:<request_id>`, as stored.
    pub events: Vec<Event>,
    /// One inclusion proof per event, in the same order.
    pub proofs: Vec<Proof>,
    /// A signed tree head that covers every event listed.
    pub sth: SignedTreeHead,
}

/// Events per request are few (received, authorized, signed, relay and
/// settlement steps); this bounds a pathological one.
const MAX_EVENTS: i64 = 10_000;

/// Builds the evidence bundle of `request_id`.
pub fn bundle(svc: &Services, request_id: &str) -> DomainResult<Bundle> {
    let subject = crate::signing::subject(request_id);
    let (row, events, ocsp) = svc
        .store
        .read(|c| {
            let Some(row) = requests::get(c, request_id)? else {
                return Ok::<_, crate::store::StoreError>(None);
            };
            let events = audit_rows::list(
                c,
                &EventFilter {
                    subject: Some(subject.clone()),
                    action: None,
                    after_seq: 0,
                    limit: MAX_EVENTS,
                },
            )?;
            Ok(Some((row, events, evidence::get(c, request_id)?)))
        })?
        .ok_or_else(|| reject(Problem::RequestNotFound, "no such signing request"))?;
    let (Some(signature), Some(signed_xml)) = (row.signature_b64.clone(), row.signed_xml.clone())
    else {
        return Err(reject(
            Problem::RequestNotSigned,
            format!(
                "the request was never signed (status {}); there is no evidence of a signature",
                row.seen_at(svc.clock.now().unix_timestamp())
            ),
        ));
    };
    let events = events
        .into_iter()
        .map(Event::from_row)
        .collect::<Result<Vec<_>, AuditError>>()?;
    let signed = events
        .iter()
        .find(|e| e.action == SIGNED_ACTION)
        .ok_or_else(|| {
            internal(format!(
                "request {request_id}: signed without a {SIGNED_ACTION} event"
            ))
        })?;
    let serial = signed.details["certificate"]
        .as_str()
        .ok_or_else(|| {
            internal(format!(
                "request {request_id}: {SIGNED_ACTION} without a certificate"
            ))
        })?
        .to_string();
    let cert = svc.store.read(|c| certs::get(c, &serial))?.ok_or_else(|| {
        internal(format!(
            "request {request_id}: certificate {serial} missing"
        ))
    })?;
    let c_bytes = crate::signing::parse_stored(&row)?
        .canonical_c()
        .map_err(crate::signing::ims_error)?;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let (proofs, sth) = proofs_and_sth(svc, &seqs)?;
    Ok(Bundle {
        request_id: row.id.clone(),
        status: row.seen_at(svc.clock.now().unix_timestamp()).to_string(),
        ims: signed_xml,
        c: crate::signing::b64(&c_bytes),
        signature,
        certificate: cert.pem,
        chain: format!("{}{}", svc.pki.issuing.info.pem, svc.pki.root.info.pem),
        ocsp: ocsp.map(|o| o.ocsp_der_b64),
        events,
        proofs,
        sth,
    })
}

/// Inclusion proofs of `seqs` and a signed tree head that covers them all.
///
/// The tree head the bundle stands on, and one inclusion proof in it per
/// listed event. The newest signed tree head is taken; when it does not
/// cover every listed event (no checkpoint since the request was signed),
/// one is signed now (`make_checkpoint` signs a tree head with each
/// checkpoint) and taken again, so that a bundle verifies on its own
/// without waiting for the next timer. Each proof reads O(log n) stored
/// tree nodes.
fn proofs_and_sth(svc: &Services, seqs: &[i64]) -> DomainResult<(Vec<Proof>, SignedTreeHead)> {
    let needed = seqs.iter().copied().max().unwrap_or(0);
    let covering = |h: Option<SignedTreeHead>| h.filter(|h| h.tree_size >= needed);
    let sth = match covering(tree::latest_sth(&svc.store)?) {
        Some(h) => h,
        None => {
            super::make_checkpoint(
                &svc.store,
                svc.custody.as_ref(),
                &svc.pki.keys.audit,
                svc.clock.now(),
            )?;
            covering(tree::latest_sth(&svc.store)?)
                .ok_or_else(|| internal("no signed tree head covers the request's events"))?
        }
    };
    let proofs = seqs
        .iter()
        .map(|&seq| {
            tree::inclusion(&svc.store, seq, sth.tree_size).map(|p| Proof {
                seq,
                audit_path: p.audit_path,
            })
        })
        .collect::<Result<Vec<_>, AuditError>>()?;
    Ok((proofs, sth))
}
