//! Parties: merchants, FSPs, banks and gateways, known by a certificate —
//! given, or issued by the tmcs CA from a CSR under the `party` profile.
//! FSP and gateway certificates are also mTLS identities with that role.

use diesel::prelude::*;
use openssl::pkey::Id;
use openssl::x509::X509;
use serde::Serialize;
use serde_json::json;

use crate::app::App;
use crate::audit::{self, Actor, NewEvent};
use crate::error::{reject, DomainResult};
use crate::pki::lifecycle::{self, Transition};
use crate::pki::{CertInfo, Reason};
use crate::store::clients::{self, ClientRow};
use crate::store::schema::parties;
use crate::store::{certs, DbConn};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = parties, treat_none_as_null = true)]
pub struct PartyRow {
    pub party_id: String,
    pub kind: String,
    pub fingerprint: String,
    pub cert_serial: Option<String>,
    pub cert_pem: String,
    pub issued_by_us: i32,
    pub callback_url: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub const KINDS: &[&str] = &["merchant", "fsp", "bank", "gateway"];

pub fn get(conn: &mut DbConn, party_id: &str) -> DomainResult<Option<PartyRow>> {
    Ok(parties::table
        .find(party_id)
        .select(PartyRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn by_fingerprint(conn: &mut DbConn, fp: &str) -> DomainResult<Option<PartyRow>> {
    Ok(parties::table
        .filter(parties::fingerprint.eq(fp))
        .select(PartyRow::as_select())
        .first(conn)
        .optional()?)
}

/// `local@<kind>.domain` (the iMS party-id form; gateways use `@gateway.`).
pub fn valid_party_id(id: &str, kind: &str) -> bool {
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
        && role == kind
        && (1..=63).contains(&domain.len())
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A signer key the iMS check accepts: EC P-256 or RSA of at least 2048 bits.
fn check_signing_key(x: &X509) -> DomainResult<()> {
    let key = x
        .public_key()
        .map_err(|_| reject("certificate.invalid", "unreadable public key"))?;
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
            "certificate.invalid",
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
    pub kind: String,
    pub credential: Credential,
    pub callback_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PartyView {
    pub party_id: String,
    pub kind: String,
    pub status: String,
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

fn mtls_role(kind: &str) -> Option<&'static str> {
    match kind {
        "fsp" => Some("fsp"),
        "gateway" => Some("gateway"),
        _ => None,
    }
}

/// `POST /v1/admin/parties`.
pub fn register(app: &App, actor: &Actor, p: NewParty) -> DomainResult<PartyView> {
    if !KINDS.contains(&p.kind.as_str()) {
        return Err(reject(
            "request.invalid",
            "kind must be merchant, fsp, bank or gateway",
        ));
    }
    if !valid_party_id(&p.party_id, &p.kind) {
        return Err(reject(
            "request.invalid",
            format!("party_id must look like name@{}.domain", p.kind),
        ));
    }
    if let Some(u) = &p.callback_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 512 {
            return Err(reject(
                "request.invalid",
                "callback_url must be an http(s) URL",
            ));
        }
    }
    let now = app.clock.now();
    if app
        .store
        .read(|c| get(c, &p.party_id))?
        .is_some_and(|r| r.status != "revoked")
    {
        return Err(reject("party.exists", "the party is already registered"));
    }
    // The certificate: checked as given, or issued from the CSR.
    let (info, issued) = match &p.credential {
        Credential::Certificate(pem) => {
            let x = X509::from_pem(pem.as_bytes())
                .map_err(|_| reject("certificate.invalid", "certificate is not PEM X.509"))?;
            check_signing_key(&x)?;
            let info = CertInfo::from_x509(&x)?;
            if now < info.not_before || now > info.not_after {
                return Err(reject(
                    "certificate.invalid",
                    "the certificate is expired or not yet valid",
                ));
            }
            (info, false)
        }
        Credential::Csr(pem) => {
            let csr = rcgen::CertificateSigningRequestParams::from_pem(pem)
                .map_err(|e| reject("certificate.invalid", format!("CSR: {e}")))?;
            let info = app
                .pki
                .issue("party", &p.party_id, vec![], &csr.public_key, now)?;
            let x = X509::from_der(&info.der).map_err(|e| reject("internal", e.to_string()))?;
            check_signing_key(&x)?;
            (info, true)
        }
    };
    let row = PartyRow {
        party_id: p.party_id.clone(),
        kind: p.kind.clone(),
        fingerprint: info.fingerprint.clone(),
        cert_serial: issued.then(|| info.serial_hex.clone()),
        cert_pem: info.pem.clone(),
        issued_by_us: i32::from(issued),
        callback_url: p.callback_url.clone(),
        status: "active".into(),
        created_at: now.unix_timestamp(),
        updated_at: now.unix_timestamp(),
    };
    app.store.write(|c| -> DomainResult<()> {
        if let Some(old) = get(c, &p.party_id)? {
            if old.status != "revoked" {
                return Err(reject("party.exists", "the party is already registered"));
            }
            diesel::delete(parties::table.find(&p.party_id)).execute(c)?;
        }
        if by_fingerprint(c, &info.fingerprint)?.is_some() {
            return Err(reject(
                "party.exists",
                "this certificate already belongs to a party",
            ));
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
                    "active",
                    now,
                ),
            )?;
            events.push(NewEvent::new(
                actor,
                "cert.issued",
                Some(info.serial_hex.clone()),
                json!({ "party": p.party_id, "profile": "party", "fingerprint": info.fingerprint }),
            ));
        }
        diesel::insert_into(parties::table)
            .values(&row)
            .execute(c)?;
        if let Some(role) = mtls_role(&p.kind) {
            match clients::get(c, &info.fingerprint)? {
                // A bootstrap client certificate (e.g. fsp-demo) becomes this party's.
                Some(existing) if existing.role == role => {
                    diesel::update(
                        crate::store::schema::clients::table.find(&existing.fingerprint),
                    )
                    .set(crate::store::schema::clients::party_id.eq(&p.party_id))
                    .execute(c)?;
                }
                Some(_) => {
                    return Err(reject(
                        "party.exists",
                        "this certificate is registered for another role",
                    ))
                }
                None => clients::insert(
                    c,
                    &ClientRow {
                        fingerprint: info.fingerprint.clone(),
                        role: role.to_string(),
                        name: p.party_id.clone(),
                        party_id: Some(p.party_id.clone()),
                        serial: issued.then(|| info.serial_hex.clone()),
                        status: "active".into(),
                        created_at: now.unix_timestamp(),
                    },
                )?,
            }
            events.push(NewEvent::new(
                actor,
                "auth.client_registered",
                Some(subject(&p.party_id)),
                json!({ "role": role, "fingerprint": info.fingerprint }),
            ));
        }
        events.push(NewEvent::new(
            actor,
            "party.registered",
            Some(subject(&p.party_id)),
            json!({ "kind": p.kind, "fingerprint": info.fingerprint, "issued_by_tmcs": issued,
                    "serial": issued.then(|| info.serial_hex.clone()) }),
        ));
        audit::append_all(c, now, events)?;
        Ok(())
    })?;
    Ok(row.into())
}

pub fn view(app: &App, party_id: &str) -> DomainResult<PartyView> {
    app.store
        .read(|c| get(c, party_id))?
        .map(PartyView::from)
        .ok_or_else(|| reject("party.not_found", "no such party"))
}

/// Suspends, resumes or revokes a party; a certificate tmcs issued follows
/// (so CRL and OCSP show it), and so does its mTLS identity.
pub fn transition(
    app: &App,
    actor: &Actor,
    party_id: &str,
    t: Transition,
) -> DomainResult<PartyView> {
    let now = app.clock.now();
    app.store.write(|c| -> DomainResult<PartyView> {
        let mut p = get(c, party_id)?.ok_or_else(|| reject("party.not_found", "no such party"))?;
        let (from_ok, to, action) = match t {
            Transition::Suspend => (p.status == "active", "suspended", "party.suspended"),
            Transition::Resume => (p.status == "suspended", "active", "party.resumed"),
            Transition::Revoke(_) => (p.status != "revoked", "revoked", "party.revoked"),
        };
        if !from_ok {
            return Err(if p.status == "revoked" {
                reject("certificate.revoked", "the party is revoked")
            } else {
                reject(
                    "certificate.invalid_transition",
                    format!("the party is {}", p.status),
                )
            });
        }
        let mut events = Vec::new();
        if let Some(serial) = p.cert_serial.clone() {
            let (_, ev) = lifecycle::transition(c, actor, &serial, t, now)?;
            events.push(ev);
        } else {
            diesel::update(
                crate::store::schema::clients::table
                    .filter(crate::store::schema::clients::fingerprint.eq(&p.fingerprint)),
            )
            .set(crate::store::schema::clients::status.eq(to))
            .execute(c)?;
        }
        p.status = to.into();
        p.updated_at = now.unix_timestamp();
        diesel::update(parties::table.find(party_id))
            .set(&p)
            .execute(c)?;
        let reason = match t {
            Transition::Revoke(r) => Some(r.name()),
            _ => None,
        };
        events.push(NewEvent::new(
            actor,
            action,
            Some(subject(party_id)),
            json!({ "reason": reason }),
        ));
        audit::append_all(c, now, events)?;
        Ok(p.into())
    })
}

/// The default revocation reason for a party when the operator gives none.
pub fn default_reason() -> Reason {
    Reason::Unspecified
}
