//! `POST /v1/fsp/messages`: verify the merchant and the FSP, the payer,
//! tier, limits, freshness and replay; create the request (or return the
//! same one for the same message).

use crate::problem::Problem;
use std::sync::Arc;

use super::{b64url, ims_error, subject, verification_code};
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::error::{internal, reject, DomainError, DomainResult};
use crate::ims::{ImsMessage, PartyId, PartyRole};
use crate::keycache::{self, CachedKey};
use crate::states::{CertStatus, PartyKind, RequestStatus};
use crate::store::daily_totals::{self, DayKey};
use crate::store::parties::{self, PartyRow};
use crate::store::requests::{self, RequestRow};
use crate::store::subscribers::{self, SubscriberRow};
use crate::store::DbConn;
use crate::subscriber;

#[derive(Debug)]
pub struct Submitted {
    pub request: RequestRow,
    /// False when the same message was submitted before (idempotent).
    pub created: bool,
}

/// Verifies `sig` over `msg` with the party's key (ECDSA P-256 or RSA
/// PKCS#1 v1.5, SHA-256, as the certificate's key says).
fn verify_party(key: &CachedKey, msg: &[u8], sig: &[u8]) -> bool {
    crate::pki::sha256_signature_verifies(&key.key, msg, sig)
}

/// A registered party of `kind` that may take part now, and its key.
fn usable_party(
    svc: &Services,
    conn: &mut DbConn,
    id: &str,
    kind: PartyKind,
    now: i64,
) -> DomainResult<(PartyRow, Arc<CachedKey>)> {
    let p = parties::get(conn, id)?
        .filter(|p| p.kind == kind)
        .ok_or_else(|| {
            reject(
                Problem::ImsUnknownParty,
                format!("{id} is not a registered {kind}"),
            )
        })?;
    if p.status != CertStatus::Active {
        return Err(reject(
            Problem::ImsUnknownParty,
            format!("{id} is {}", p.status),
        ));
    }
    // The certificate's own status, not only the party's: one tmcs issued
    // (registered by CSR or given) answers for itself in the registry, and
    // a certificate revoked with an earlier party stays revoked.
    if let Some(cert) = crate::store::certs::by_fingerprint(conn, &p.fingerprint)? {
        if cert.status != CertStatus::Active {
            return Err(reject(
                Problem::ImsUnknownParty,
                format!("the certificate of {id} is {}", cert.status),
            ));
        }
    }
    if parties::revoked_fingerprint(conn, &p.fingerprint)?.is_some() {
        return Err(reject(
            Problem::ImsUnknownParty,
            format!("the certificate of {id} was revoked"),
        ));
    }
    let key = svc
        .keys
        .get_or_load(&p.fingerprint, || keycache::from_cert_pem(&p.cert_pem))
        .map_err(|_| internal(format!("stored certificate of {id} is unreadable")))?;
    if now < key.not_before || now > key.not_after {
        return Err(reject(
            Problem::ImsUnknownParty,
            format!("the certificate of {id} is not valid now"),
        ));
    }
    Ok((p, key))
}

fn payer(conn: &mut DbConn, from: &PartyId) -> DomainResult<SubscriberRow> {
    let found = match (from.msisdn(), from.role()) {
        (Some(msisdn), _) => subscribers::by_msisdn(conn, msisdn)?,
        (None, Some(PartyRole::Person)) => subscribers::by_alias(conn, &from.to_string())?,
        _ => None,
    };
    found.ok_or_else(|| {
        reject(
            Problem::SubscriberNotFound,
            "the payer is not a registered subscriber",
        )
    })
}

/// The replay key: (`to.id`, `ref`), or the digest of `M` without a ref.
fn replay_key(m: &ImsMessage, m_bytes: &[u8]) -> String {
    match &m.reference {
        Some(r) => format!("ref:{}|{}", m.to, r),
        None => format!("m:{}", hex::encode(openssl::sha::sha256(m_bytes))),
    }
}

/// `POST /v1/fsp/messages`. A resubmission of the same message answers with
/// the request as it is now (see [`super::views::SubmitView`]). Every
/// refusal is audited as `request.rejected` with its code.
pub fn submit(
    svc: &Services,
    fsp_party: Option<&str>,
    actor: &Actor,
    body: &[u8],
) -> DomainResult<Submitted> {
    match submit_inner(svc, fsp_party, actor, body) {
        Err(DomainError::Rejected {
            problem,
            detail,
            attempts_left,
        }) => {
            let now = svc.clock.now();
            let ev = NewEvent::of(
                actor,
                None,
                AuditEvent::RequestRejected {
                    problem: problem.code(),
                    reason: detail.chars().take(200).collect(),
                    fsp: fsp_party.map(str::to_string),
                },
            );
            if let Err(e) = svc.store.write(|c| audit::append(c, now, ev)) {
                tracing::error!(error = %e, "cannot audit a rejected submission");
            }
            Err(DomainError::Rejected {
                problem,
                detail,
                attempts_left,
            })
        }
        other => other,
    }
}

fn submit_inner(
    svc: &Services,
    fsp_party: Option<&str>,
    actor: &Actor,
    body: &[u8],
) -> DomainResult<Submitted> {
    let now = svc.clock.now();
    let t = now.unix_timestamp();
    let m = ImsMessage::parse(body).map_err(ims_error)?;
    if m.from_sign.is_some() {
        return Err(reject(
            Problem::ImsMalformed,
            "from/sign must be empty: tmcs adds it",
        ));
    }
    let (Some(s_m), Some(s_f)) = (m.to_sign.clone(), m.fsp_sign.clone()) else {
        return Err(reject(
            Problem::ImsMalformed,
            "to/sign and FSPsign are required",
        ));
    };
    if svc.relay.enabled() && svc.relay.settings.mode == crate::relay::Mode::FspBank {
        // What is signed must be instructable to the bank as it stands.
        crate::relay::pain::instructable(&m).map_err(|e| reject(Problem::ImsMalformed, e))?;
    }
    let policy = &svc.policy;
    let tier = policy.tier(&m.amount)?;
    if tier != m.tier {
        return Err(reject(
            Problem::ImsTierMismatch,
            format!(
                "an amount of {} is tier {}, not {}",
                m.amount,
                tier.as_str(),
                m.tier.as_str()
            ),
        ));
    }
    let limits = policy.limits(&m.amount)?;
    if m.amount.minor() > limits.per_payment_max {
        return Err(reject(
            Problem::LimitExceeded,
            "the amount is above the per-payment limit",
        ));
    }
    let skew = t.abs_diff(m.timestamp.unix_timestamp());
    if skew > policy.max_clock_skew_seconds.unsigned_abs() {
        return Err(reject(
            Problem::ImsStale,
            format!(
                "the timestamp is {skew} s from now (at most {} s allowed)",
                policy.max_clock_skew_seconds
            ),
        ));
    }
    let Some(fsp_id) = fsp_party else {
        return Err(reject(
            Problem::AuthForbidden,
            "this FSP client is not bound to a registered FSP party",
        ));
    };
    // The payee: a registered merchant signs M. A person payee (P2P, by
    // person id or tel:) has no certificate; the calling FSP signs M for it.
    let merchant_id = m.to.to_string();
    let p2p = m.to.role() != Some(PartyRole::Merchant);
    if p2p && m.to == m.from {
        return Err(reject(
            Problem::ImsUnknownParty,
            "payer and payee are the same",
        ));
    }
    let (merchant, fsp) = svc.store.read(|c| -> DomainResult<_> {
        let fsp = usable_party(svc, c, fsp_id, PartyKind::Fsp, t)?;
        let payee = if p2p {
            fsp.clone()
        } else {
            usable_party(svc, c, &merchant_id, PartyKind::Merchant, t)?
        };
        Ok((payee, fsp))
    })?;
    let m_bytes = m.canonical_m();
    let f_bytes = m.canonical_f().map_err(ims_error)?;
    let c_bytes = m.canonical_c().map_err(ims_error)?;
    if !verify_party(&merchant.1, &m_bytes, &s_m) {
        return Err(reject(
            Problem::ImsBadSignature,
            if p2p {
                "to/sign does not verify over M with the calling FSP's certificate (P2P)"
            } else {
                "to/sign does not verify over M with the merchant's certificate"
            },
        ));
    }
    if !verify_party(&fsp.1, &f_bytes, &s_f) {
        return Err(reject(
            Problem::ImsBadSignature,
            "FSPsign does not verify over F with the calling FSP's certificate",
        ));
    }
    let c_digest = openssl::sha::sha256(&c_bytes);
    let c_hex = hex::encode(c_digest);
    let key = replay_key(&m, &m_bytes);
    let existing = |c: &mut DbConn| -> DomainResult<Option<Submitted>> {
        match requests::by_replay_key(c, &key)? {
            Some(r) if r.c_sha256 == c_hex && r.fsp_party == fsp_id => Ok(Some(Submitted {
                request: r,
                created: false,
            })),
            Some(_) => Err(reject(
                Problem::ImsReplay,
                "another message with this reference (or M) was already submitted",
            )),
            None => Ok(None),
        }
    };
    if let Some(same) = svc.store.read(|c| existing(c))? {
        return Ok(same);
    }

    let payer_row = svc.store.read(|c| payer(c, &m.from))?;
    let mut nonce = [0u8; 16];
    openssl::rand::rand_bytes(&mut nonce).map_err(|e| internal(e.to_string()))?;
    let day = now.date().to_string();
    let row = RequestRow {
        id: uuid::Uuid::new_v4().to_string(),
        subscriber_id: payer_row.id.clone(),
        fsp_party: fsp_id.to_string(),
        merchant_party: merchant_id.clone(),
        replay_key: key.clone(),
        c_sha256: c_hex.clone(),
        dtbs_sha256: b64url(&c_digest),
        nonce: b64url(&nonce),
        verification_code: verification_code(&c_digest),
        tier: tier.as_str().into(),
        currency: m.amount.currency().code().into(),
        amount_minor: i64::try_from(m.amount.minor())
            .map_err(|_| reject(Problem::LimitExceeded, "amount too large"))?,
        limit_day: day.clone(),
        ims_xml: m.to_xml(),
        signed_xml: None,
        signature_b64: None,
        status: RequestStatus::PendingAuthorization,
        error_code: None,
        created_at: t,
        expires_at: t + policy.request_ttl_seconds,
        updated_at: t,
        signed_at: None,
        final_at: None,
        instrument_id: None,
    };
    let max = svc.pins.settings.max_attempts;
    let result = svc.store.write(|c| -> DomainResult<Submitted> {
        if let Some(same) = existing(c)? {
            return Ok(same);
        }
        // The one signer check; its row lock makes submissions of one payer
        // take turns.
        subscriber::lock_signer(c, &payer_row.id, max, now)?;
        // The day's running total takes the amount only if it stays within
        // the limit (a conditional update, undone if this transaction is).
        let daily = i64::try_from(limits.daily_max).unwrap_or(i64::MAX);
        let day_key = DayKey {
            subscriber_id: &payer_row.id,
            currency: &row.currency,
            day: &day,
        };
        let Some(counted) = daily_totals::count_within(c, &day_key, row.amount_minor, daily)?
        else {
            return Err(reject(
                Problem::LimitExceeded,
                "the payer's daily limit would be exceeded",
            ));
        };
        // `alias:<alias>` names an active instrument of this payer (CONTRACT
        // §12); its row is locked, so a disconnection either happened
        // before or waits for this transaction.
        let mut row = row.clone();
        row.instrument_id =
            crate::relay::instruments::resolve(c, &payer_row.id, &m.account_payable)?.map(|i| i.id);
        requests::insert(c, &row, counted)?;
        audit::append(
            c,
            now,
            NewEvent::of(
                actor,
                subject(&row.id),
                AuditEvent::RequestReceived {
                    fsp: fsp_id.to_string(),
                    merchant: merchant_id.clone(),
                    payer: subscriber::subject(&payer_row.id),
                    amount: m.amount.to_string(),
                    tier: row.tier.clone(),
                    reference: m.reference.as_ref().map(|r| r.to_string()),
                    dtbs_sha256: row.dtbs_sha256.clone(),
                    expires_at: crate::clock::rfc3339_unix(row.expires_at),
                },
            ),
        )?;
        Ok(Submitted {
            request: row.clone(),
            created: true,
        })
    });
    match result {
        // Lost a race to an identical insert: answer like a resubmission.
        Err(DomainError::Store(e)) if e.is_unique_violation() => {
            svc.store.read(|c| existing(c))?.ok_or_else(|| {
                reject(
                    Problem::ImsReplay,
                    "another message with this reference was submitted",
                )
            })
        }
        other => other,
    }
}
