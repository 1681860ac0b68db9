//! Authorisation and the exactly-once signature.
//!
//! 1. The PIN block is decrypted inside the HSM and must name this request,
//!    its nonce and `dtbs_sha256` (handset), or the gateway names it (tier
//!    `small` only).
//! 2. In one transaction: the one signer check ([`lock_signer`]) on the
//!    locked subscriber row, the PIN against the verifier with the shared
//!    try counter, and the claim `pending → signing` (a conditional update:
//!    only one caller can win it).
//! 3. SHA-256 of the canonical `C` must equal the digest the PIN block was
//!    bound to; the HSM signs exactly that digest. A mismatch fails the
//!    request, audited, and nothing is signed.
//! 4. Before the HSM signs `C`, the OCSP responder signs a fresh answer
//!    for the payer's certificate (status good now; CONTRACT §13: the
//!    evidence that the certificate was good when it signed). A
//!    certificate no longer good, or an HSM that cannot sign it, fails the
//!    request and nothing is signed.
//! 5. The signature, the signed iMS and the OCSP response are stored in one
//!    transaction (`signing → signed`). A crash between 2 and 5 leaves no
//!    signature out; the sweeper expires the request.

use serde::Serialize;
use zeroize::Zeroizing;

use super::views::{not_pending, pending_of};
use super::{b64, b64url, parse_stored, subject};
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, Channel, NewEvent, PinDuring};
use crate::error::{internal, reject, DomainError, DomainResult, Problem};
use crate::ims::Tier;
use crate::states::{RequestStatus, SubscriberState};
use crate::store::evidence::EvidenceRow;
use crate::store::requests::{self, Effects, RequestRow};
use crate::store::subscribers::{self, SubscriberRow};
use crate::subscriber::keys::SignerKey;
use crate::subscriber::pin::{self, Check};
use crate::subscriber::pin_change::{pin_failure_events, pin_refusal};
use crate::subscriber::{self, lock_signer, pinblock};

/// `200` of both authorisation endpoints (CONTRACT §7).
#[derive(Debug, Serialize)]
pub struct Signed {
    pub status: RequestStatus,
    pub request_id: String,
    /// Base64 DER ECDSA signature over `C`.
    pub signature: String,
}

/// `200` of `POST /v1/handset/requests/{id}/decline`.
#[derive(Debug, Serialize)]
pub struct Declined {
    pub status: RequestStatus,
    pub request_id: String,
}

/// `POST /v1/handset/requests/{id}/authorize`, for the payer that device
/// authentication found.
pub fn authorize_handset(
    svc: &Services,
    payer: &SubscriberRow,
    request_id: &str,
    pin_block: &str,
) -> DomainResult<Signed> {
    let actor = Actor::Subscriber(payer.id.clone());
    let plain = pinblock::open(
        svc.custody.as_ref(),
        &svc.pki.keys.transport,
        &svc.pki.transport.point,
        pin_block,
    )?;
    let p = pinblock::parse_auth(&plain)?;
    let row = pending_of(svc, &payer.id, request_id)?;
    let bound = p.request_id == row.id
        && pin::ct_eq(p.nonce.as_bytes(), row.nonce.as_bytes())
        && pin::ct_eq(p.dtbs_sha256.as_bytes(), row.dtbs_sha256.as_bytes());
    if !bound {
        let now = svc.clock.now();
        svc.store.write(|c| {
            audit::append(
                c,
                now,
                NewEvent::of(
                    &actor,
                    subject(&row.id),
                    AuditEvent::RequestSadMismatch {
                        channel: Channel::Handset,
                    },
                ),
            )
        })?;
        return Err(reject(
            Problem::SadMismatch,
            "the PIN block does not match this request's id, nonce and digest",
        ));
    }
    sign_once(svc, &actor, payer, row, &p.pin, Channel::Handset)
}

/// `POST /v1/gateway/authorize`: USSD/SMS without an app, tier `small` only.
pub fn authorize_gateway(
    svc: &Services,
    actor: &Actor,
    msisdn: &str,
    request_id: &str,
    pin: &str,
) -> DomainResult<Signed> {
    let pin = Zeroizing::new(pin.to_string());
    let s = svc
        .store
        .read(|c| subscribers::by_msisdn(c, msisdn))?
        .ok_or_else(|| {
            reject(
                Problem::RequestNotFound,
                "no such request for this subscriber",
            )
        })?;
    let row = pending_of(svc, &s.id, request_id)?;
    if row.tier != Tier::Small.as_str() {
        let now = svc.clock.now();
        svc.store.write(|c| {
            audit::append(
                c,
                now,
                NewEvent::of(
                    actor,
                    subject(&row.id),
                    AuditEvent::AuthDenied {
                        method: None,
                        route: None,
                        required_role: None,
                        reason: "gateway may only authorise tier small".into(),
                        tier: Some(row.tier.clone()),
                    },
                ),
            )
        })?;
        return Err(reject(
            Problem::AuthForbidden,
            "the gateway may only authorise tier small",
        ));
    }
    sign_once(svc, actor, &s, row, &pin, Channel::Gateway)
}

/// What the authorisation transaction decided.
enum Gate {
    /// Claimed: sign with this key; the certificate's serial and PEM.
    Claimed {
        key: SignerKey,
        serial: String,
        cert_pem: String,
    },
    /// A committed refusal (a wrong PIN counts).
    Refused(DomainError),
    /// The PIN was changed since the salt was read: hash again with this one.
    Resalt(Vec<u8>),
}

/// Signer check, PIN and claim in one transaction; then one HSM signature
/// over the bound digest, stored.
fn sign_once(
    svc: &Services,
    actor: &Actor,
    payer: &SubscriberRow,
    row: RequestRow,
    pin_value: &str,
    channel: Channel,
) -> DomainResult<Signed> {
    let max = svc.pins.settings.max_attempts;
    // The PIN is hashed (argon2id, then HMAC in the HSM) outside the
    // transaction, with the salt as read; the transaction checks it is still
    // the subscriber's.
    let mut salt = payer.pin_salt.as_deref().and_then(|h| hex::decode(h).ok());
    let mut gate = None;
    for _ in 0..2 {
        let candidate = match &salt {
            Some(s) => Some(svc.pins.verifier(svc.custody.as_ref(), s, pin_value)?),
            None => None,
        };
        let now = svc.clock.now();
        let t = now.unix_timestamp();
        let decided = svc.store.write(|c| -> DomainResult<Gate> {
            let signer = lock_signer(c, &payer.id, max, now)?;
            let Some(candidate) = candidate.filter(|_| salt.as_deref() == Some(&signer.salt[..]))
            else {
                return Ok(Gate::Resalt(signer.salt));
            };
            let verifier = signer.verifier.clone();
            match pin::check_in_tx(
                c,
                &payer.id,
                SubscriberState::Active,
                max,
                &candidate,
                |_| Ok(Some(verifier)),
                t,
            )? {
                Check::Correct => {}
                Check::Wrong { left } => {
                    let events = pin_failure_events(
                        actor,
                        &payer.id,
                        left,
                        max,
                        PinDuring::Authorization,
                        Some(&row.id),
                    );
                    audit::append_all(c, now, events)?;
                    return Ok(Gate::Refused(pin_refusal(Some(left))));
                }
                Check::Blocked => return Ok(Gate::Refused(pin_refusal(None))),
            }
            if !requests::claim(c, &row.id, t)? {
                // Someone else won, or time ran out: nothing of this attempt is kept.
                return Err(match requests::get(c, &row.id)? {
                    Some(cur) if cur.status == RequestStatus::PendingAuthorization => {
                        reject(Problem::RequestExpired, "the request has expired")
                    }
                    Some(cur) => not_pending(cur.seen_at(t)),
                    None => reject(Problem::RequestNotFound, "no such request"),
                });
            }
            audit::append(
                c,
                now,
                NewEvent::of(
                    actor,
                    subject(&row.id),
                    AuditEvent::RequestAuthorized {
                        channel,
                        payer: subscriber::subject(&payer.id),
                        certificate: signer.certificate.serial.clone(),
                    },
                ),
            )?;
            Ok(Gate::Claimed {
                key: signer.key,
                serial: signer.certificate.serial,
                cert_pem: signer.certificate.pem,
            })
        })?;
        match decided {
            Gate::Resalt(current) => salt = Some(current),
            other => {
                gate = Some(other);
                break;
            }
        }
    }
    let (key, serial, cert_pem) = match gate {
        Some(Gate::Claimed {
            key,
            serial,
            cert_pem,
        }) => (key, serial, cert_pem),
        Some(Gate::Refused(e)) => return Err(e),
        Some(Gate::Resalt(_)) | None => {
            return Err(reject(
                Problem::SubscriberNotActive,
                "the PIN changed meanwhile; try again",
            ))
        }
    };

    // Exactly what the PIN block was bound to, or nothing.
    let mut m = parse_stored(&row)?;
    let c_bytes = m.canonical_c().map_err(super::ims_error)?;
    let digest = openssl::sha::sha256(&c_bytes);
    if hex::encode(digest) != row.c_sha256 || b64url(&digest) != row.dtbs_sha256 {
        fail_claimed(svc, &row.id, "dtbs.mismatch")?;
        return Err(internal(format!(
            "request {}: the stored message no longer hashes to the digest the PIN was bound to",
            row.id
        )));
    }
    // The OCSP response first: its thisUpdate is then at or before the
    // signature, and a certificate revoked or suspended since the claim
    // stops the signature instead of leaving one without good evidence.
    let ocsp = match ocsp_at_signing(svc, &row.id, &cert_pem) {
        Ok(Some(ev)) => ev,
        Ok(None) => {
            fail_claimed(svc, &row.id, Problem::CertificateNotActive.code())?;
            return Err(reject(
                Problem::CertificateNotActive,
                "the payer's certificate is no longer good",
            ));
        }
        Err(e) => {
            fail_claimed(svc, &row.id, "hsm.unavailable")?;
            return Err(e);
        }
    };
    let sig = match crate::subscriber::keys::sign(svc, &key, &digest) {
        Ok(sig) => sig,
        Err(e) => {
            fail_claimed(svc, &row.id, "hsm.unavailable")?;
            return Err(e.into());
        }
    };
    m.from_sign = Some(sig.clone());
    let signed_xml = m.to_xml();
    let sig_b64 = b64(&sig);
    let now = svc.clock.now();
    let stored = svc.store.write(|c| -> DomainResult<bool> {
        if !requests::store_signature(c, &row.id, &sig_b64, &signed_xml, now.unix_timestamp())? {
            return Ok(false);
        }
        // The OCSP response with the signature, or neither.
        crate::store::evidence::insert(c, &ocsp)?;
        // Step 6: the signed message leaves through the outbox, committed
        // with the signature or not at all.
        crate::relay::outbox::enqueue_signed(c, &svc.relay, &row, &signed_xml, &serial, now)?;
        audit::append(
            c,
            now,
            NewEvent::of(
                actor,
                subject(&row.id),
                AuditEvent::RequestSigned {
                    certificate: serial.clone(),
                    signature_sha256: hex::encode(openssl::sha::sha256(&sig)),
                    dtbs_sha256: row.dtbs_sha256.clone(),
                },
            ),
        )?;
        Ok(true)
    })?;
    if stored {
        svc.relay.wake();
    } else {
        // The claim was taken away (expired by the sweeper): the signature
        // is dropped here and was never given to anyone.
        return Err(reject(
            Problem::RequestExpired,
            "the request expired while signing",
        ));
    }
    Ok(Signed {
        status: RequestStatus::Signed,
        request_id: row.id,
        signature: sig_b64,
    })
}

/// A fresh OCSP response for the payer's certificate, signed now by the
/// OCSP key in the HSM (one P-256 signature, about as costly as the
/// signature over `C`), as the row that goes with the signature; `None`
/// when the certificate is not good at this moment.
fn ocsp_at_signing(
    svc: &Services,
    request_id: &str,
    cert_pem: &str,
) -> DomainResult<Option<EvidenceRow>> {
    let der = openssl::x509::X509::from_pem(cert_pem.as_bytes())
        .and_then(|x| x.to_der())
        .map_err(|e| internal(format!("request {request_id}: payer certificate: {e}")))?;
    let now = svc.clock.now();
    let (ocsp, good) = svc
        .ocsp
        .fresh_for_certificate(&svc.pki, &svc.store, &der, now)?;
    Ok(good.then(|| EvidenceRow {
        request_id: request_id.to_string(),
        ocsp_der_b64: b64(&ocsp),
        produced_at: now.unix_timestamp(),
    }))
}

/// A claimed request that will not be signed: `signing → failed`, audited.
fn fail_claimed(svc: &Services, id: &str, code: &str) -> DomainResult<()> {
    let now = svc.clock.now();
    svc.store.write(|c| -> DomainResult<()> {
        if requests::fail(c, id, RequestStatus::Signing, code, now.unix_timestamp())? {
            audit::append(
                c,
                now,
                NewEvent::of(
                    &Actor::System,
                    subject(id),
                    AuditEvent::RequestFailed {
                        error: code.to_string(),
                    },
                ),
            )?;
        }
        Ok(())
    })
}

/// `POST /v1/handset/requests/{id}/decline`.
pub fn decline(svc: &Services, subscriber_id: &str, request_id: &str) -> DomainResult<Declined> {
    let row = pending_of(svc, subscriber_id, request_id)?;
    let now = svc.clock.now();
    let t = now.unix_timestamp();
    let done = svc.store.write(|c| -> DomainResult<bool> {
        let declined = requests::transition_with(
            c,
            &row.id,
            RequestStatus::PendingAuthorization,
            RequestStatus::Declined,
            t,
            Effects {
                unexpired_at: Some(t),
                ..Effects::default()
            },
        )?;
        if declined {
            audit::append(
                c,
                now,
                NewEvent::of(
                    &Actor::Subscriber(subscriber_id.to_string()),
                    subject(&row.id),
                    AuditEvent::RequestDeclined {},
                ),
            )?;
        }
        Ok(declined)
    })?;
    if done {
        return Ok(Declined {
            status: RequestStatus::Declined,
            request_id: row.id,
        });
    }
    let status = svc
        .store
        .read(|c| requests::get(c, &row.id))?
        .map_or(row.status, |r| r.seen_at(t));
    Err(not_pending(status))
}
