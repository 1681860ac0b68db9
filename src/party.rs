//! Parties: merchants, FSPs, banks and gateways, known by a certificate —
//! given, or issued by the tmcs CA from a CSR under the `party` profile.
//! FSP and gateway certificates are also mTLS identities with that role.

use openssl::pkey::Id;
use openssl::x509::X509;
use serde::Serialize;

use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::error::{internal, reject, DomainResult, Problem};
use crate::pki::lifecycle::{self, Transition};
use crate::pki::{CertInfo, Reason};
use crate::states::{CertStatus, PartyKind};
use crate::store::certs;
use crate::store::clients::{self, ClientRow};
use crate::store::parties::{self, PartyRow};

/// `local@<kind>.domain` (the iMS party-id form; gateways use `@gateway.`).
pub fn valid_party_id(id: &str, kind: PartyKind) -> bool {
    let Some((local, rest)) = id.split_once('@') else {
        return false;
    };
    let Some((role, domain)) = rest.split_once('.') else {
        return false;
    };
    (1..=64).contains(&local.len())
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && role == kind.as_str()
        && (1..=63).contains(&domain.len())
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A signer key the iMS check accepts: EC P-256 or RSA of at least 2048 bits.
fn check_signing_key(x: &X509) -> DomainResult<()> {
    let key = x
        .public_key()
        .map_err(|_| reject(Problem::CertificateInvalid, "unreadable public key"))?;
    let ok = match key.id() {
        Id::EC => key
            .ec_key()
            .ok()
            .and_then(|k| k.group().curve_name())
            .is_some_and(|n| n == openssl::nid::Nid::X9_62_PRIME256V1),
        Id::RSA => key.bits() >= 2048,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(reject(
            Problem::CertificateInvalid,
            "the key must be EC P-256 or RSA >= 2048 bits",
        ))
    }
}

#[derive(Debug, Clone)]
pub enum Credential {
    Certificate(String),
    Csr(String),
}

#[derive(Debug, Clone)]
pub struct NewParty {
    pub party_id: String,
    /// As sent; checked against [`PartyKind`].
    pub kind: String,
    pub credential: Credential,
    pub callback_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PartyView {
    pub party_id: String,
    pub kind: PartyKind,
    pub status: CertStatus,
    pub certificate: String,
    pub fingerprint: String,
    pub serial: Option<String>,
    pub issued_by_tmcs: bool,
    pub callback_url: Option<String>,
}

impl From<PartyRow> for PartyView {
    fn from(r: PartyRow) -> Self {
        PartyView {
            party_id: r.party_id,
            kind: r.kind,
            status: r.status,
            certificate: r.cert_pem,
            fingerprint: r.fingerprint,
            serial: r.cert_serial,
            issued_by_tmcs: r.issued_by_us != 0,
            callback_url: r.callback_url,
        }
    }
}

pub fn subject(party_id: &str) -> String {
    format!("party:{party_id}")
}

/// `POST /v1/admin/parties`.
pub fn register(svc: &Services, actor: &Actor, p: NewParty) -> DomainResult<PartyView> {
    let kind: PartyKind = p.kind.parse().map_err(|_| {
        reject(
            Problem::RequestInvalid,
            "kind must be merchant, fsp, bank or gateway",
        )
    })?;
    if !valid_party_id(&p.party_id, kind) {
        return Err(reject(
            Problem::RequestInvalid,
            format!("party_id must look like name@{}.domain", p.kind),
        ));
    }
    if let Some(u) = &p.callback_url {
        // tmcs calls it over mTLS (CONTRACT §11): https only, a host, no
        // credentials or fragment, no whitespace.
        let rest = u.strip_prefix("https://").unwrap_or_default();
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let ok = !host.is_empty()
            && !host.contains('@')
            && !u.contains('#')
            && u.len() <= 512
            && u.chars().all(|c| c.is_ascii_graphic());
        if !ok {
            return Err(reject(
                Problem::RequestInvalid,
                "callback_url must be an https:// URL with a host (at most 512 characters)",
            ));
        }
    }
    let now = svc.clock.now();
    if svc
        .store
        .read(|c| parties::get(c, &p.party_id))?
        .is_some_and(|r| r.status != CertStatus::Revoked)
    {
        return Err(reject(
            Problem::PartyExists,
            "the party is already registered",
        ));
    }
    // The certificate: checked as given, or issued from the CSR.
    let (info, issued) = match &p.credential {
        Credential::Certificate(pem) => {
            let x = X509::from_pem(pem.as_bytes())
                .map_err(|_| reject(Problem::CertificateInvalid, "certificate is not PEM X.509"))?;
            check_signing_key(&x)?;
            let info = CertInfo::from_x509(&x)?;
            if now < info.not_before || now > info.not_after {
                return Err(reject(
                    Problem::CertificateInvalid,
                    "the certificate is expired or not yet valid",
                ));
            }
            // A certificate tmcs issued keeps its registry status: one it
            // revoked or holds can never come back as a given certificate.
            let known = svc
                .store
                .read(|c| certs::by_fingerprint(c, &info.fingerprint))?;
            if let Some(row) = known {
                lifecycle::require_usable(&row, now)?;
            }
            if !svc.pki.party_chain_ok(&x, now)? {
                return Err(reject(
                    Problem::CertificateInvalid,
                    "the certificate does not chain to a trust anchor configured for parties",
                ));
            }
            (info, false)
        }
        Credential::Csr(pem) => {
            let csr = rcgen::CertificateSigningRequestParams::from_pem(pem)
                .map_err(|e| reject(Problem::CertificateInvalid, format!("CSR: {e}")))?;
            let info = svc
                .pki
                .issue("party", &p.party_id, vec![], &csr.public_key, now)?;
            let x = X509::from_der(&info.der).map_err(|e| internal(e.to_string()))?;
            check_signing_key(&x)?;
            (info, true)
        }
    };
    let row = PartyRow {
        party_id: p.party_id.clone(),
        kind,
        fingerprint: info.fingerprint.clone(),
        cert_serial: issued.then(|| info.serial_hex.clone()),
        cert_pem: info.pem.clone(),
        issued_by_us: i32::from(issued),
        callback_url: p.callback_url.clone(),
        status: CertStatus::Active,
        created_at: now.unix_timestamp(),
        updated_at: now.unix_timestamp(),
    };
    svc.store.write(|c| -> DomainResult<()> {
        // A certificate that was revoked with its party stays revoked.
        if parties::revoked_fingerprint(c, &info.fingerprint)?.is_some() {
            return Err(reject(
                Problem::CertificateRevoked,
                "this certificate was revoked with its party",
            ));
        }
        match parties::by_fingerprint(c, &info.fingerprint)? {
            Some(holder) if holder.status == CertStatus::Revoked => {
                return Err(reject(
                    Problem::CertificateRevoked,
                    "this certificate was revoked with its party",
                ))
            }
            Some(_) => {
                return Err(reject(
                    Problem::PartyExists,
                    "this certificate already belongs to a party",
                ))
            }
            None => {}
        }
        if let Some(old) = parties::lock(c, &p.party_id)? {
            if old.status != CertStatus::Revoked {
                return Err(reject(
                    Problem::PartyExists,
                    "the party is already registered",
                ));
            }
            parties::delete(c, &p.party_id)?;
        }
        let mut events = Vec::new();
        if issued {
            certs::insert(
                c,
                &info.to_row(
                    "issuing",
                    "party",
                    Some(&subject(&p.party_id)),
                    None,
                    CertStatus::Active,
                    now,
                ),
            )?;
            events.push(NewEvent::of(
                actor,
                info.serial_hex.clone(),
                AuditEvent::PartyCertIssued {
                    party: p.party_id.clone(),
                    profile: "party",
                    fingerprint: info.fingerprint.clone(),
                },
            ));
        }
        parties::insert(c, &row)?;
        if let Some(role) = kind.mtls_role() {
            match clients::get(c, &info.fingerprint)? {
                // A bootstrap client certificate (e.g. fsp-demo) becomes this party's.
                Some(existing) if existing.role == role => {
                    clients::bind_party(c, &existing.fingerprint, &p.party_id)?;
                }
                Some(_) => {
                    return Err(reject(
                        Problem::PartyExists,
                        "this certificate is registered for another role",
                    ))
                }
                None => clients::insert(
                    c,
                    &ClientRow {
                        fingerprint: info.fingerprint.clone(),
                        role,
                        name: p.party_id.clone(),
                        party_id: Some(p.party_id.clone()),
                        serial: issued.then(|| info.serial_hex.clone()),
                        status: CertStatus::Active,
                        created_at: now.unix_timestamp(),
                    },
                )?,
            }
            events.push(NewEvent::of(
                actor,
                subject(&p.party_id),
                AuditEvent::ClientRegistered {
                    client: None,
                    role,
                    fingerprint: info.fingerprint.clone(),
                },
            ));
        }
        events.push(NewEvent::of(
            actor,
            subject(&p.party_id),
            AuditEvent::PartyRegistered {
                kind,
                fingerprint: info.fingerprint.clone(),
                issued_by_tmcs: issued,
                serial: issued.then(|| info.serial_hex.clone()),
            },
        ));
        audit::append_all(c, now, events)?;
        Ok(())
    })?;
    Ok(row.into())
}

pub fn view(svc: &Services, party_id: &str) -> DomainResult<PartyView> {
    svc.store
        .read(|c| parties::get(c, party_id))?
        .map(PartyView::from)
        .ok_or_else(|| reject(Problem::PartyNotFound, "no such party"))
}

/// Suspends, resumes or revokes a party; a certificate tmcs issued follows
/// (so CRL and OCSP show it), and so does its mTLS identity.
pub fn transition(
    svc: &Services,
    actor: &Actor,
    party_id: &str,
    t: Transition,
) -> DomainResult<PartyView> {
    let now = svc.clock.now();
    svc.store.write(|c| -> DomainResult<PartyView> {
        let Some(mut p) = parties::lock(c, party_id)? else {
            return Err(reject(Problem::PartyNotFound, "no such party"));
        };
        let (from_ok, to) = match t {
            Transition::Suspend => (p.status == CertStatus::Active, CertStatus::Suspended),
            Transition::Resume => (p.status == CertStatus::Suspended, CertStatus::Active),
            Transition::Revoke(_) => (p.status != CertStatus::Revoked, CertStatus::Revoked),
        };
        if !from_ok {
            return Err(if p.status == CertStatus::Revoked {
                reject(Problem::CertificateRevoked, "the party is revoked")
            } else {
                reject(
                    Problem::CertificateInvalidTransition,
                    format!("the party is {}", p.status),
                )
            });
        }
        let mut events = Vec::new();
        if let Some(serial) = p.cert_serial.clone() {
            let (_, ev) = lifecycle::transition(c, actor, &serial, t, now)?;
            events.push(ev);
        } else {
            clients::set_status_by_fingerprint(c, &p.fingerprint, to)?;
        }
        p.status = to;
        p.updated_at = now.unix_timestamp();
        parties::save(c, &p)?;
        let reason = match t {
            Transition::Revoke(r) => Some(r.name()),
            _ => None,
        };
        if let Some(r) = reason {
            parties::record_revocation(c, &p.fingerprint, party_id, r, now.unix_timestamp())?;
        }
        events.push(NewEvent::of(
            actor,
            subject(party_id),
            AuditEvent::PartyTransition { to, reason },
        ));
        audit::append_all(c, now, events)?;
        Ok(p.into_inner().into())
    })
}

/// The default revocation reason for a party when the operator gives none.
pub fn default_reason() -> Reason {
    Reason::Unspecified
}
