//! Who is calling an mTLS API (CONTRACT §3): the client certificate's
//! fingerprint → the registered client → its role (and party). The role
//! comes from the registry, never from the request. A missing certificate
//! is `auth.unauthenticated`; an unknown, suspended, revoked or expired one,
//! or a wrong role, is `auth.forbidden`. A refusal of a registered client
//! is one `auth.denied` event; a caller without a registered certificate
//! proved nothing and is counted per source (`audit::refusals`). Nothing
//! else happens.

use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::error::{reject, DomainError, DomainResult, Problem};
use crate::states::{CertStatus, Role};
use crate::store::{certs, clients};

/// The client certificate a connection presented.
#[derive(Debug, Clone)]
pub struct Peer {
    /// SHA-256 of its DER, lowercase hex.
    pub fingerprint: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// The authenticated client of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    pub fingerprint: String,
    pub name: String,
    pub party_id: Option<String>,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::Client {
            role: self.role.as_str().to_string(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// What is being called (for the audit event of a refusal).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub required: Role,
    pub method: &'a str,
    pub route: &'a str,
    /// The client's address.
    pub source: Option<std::net::IpAddr>,
}

/// Resolves the caller for `target`, or refuses (audited).
pub fn authorize(svc: &Services, peer: Option<&Peer>, target: Target<'_>) -> DomainResult<Caller> {
    let now = svc.clock.now();
    let deny = |actor: Actor, problem: Problem, reason: &str| -> DomainError {
        let ev = NewEvent::of(
            &actor,
            None,
            AuditEvent::AuthDenied {
                method: Some(target.method.to_string()),
                route: Some(target.route.to_string()),
                required_role: Some(target.required),
                reason: reason.to_string(),
                tier: None,
            },
        );
        if let Err(e) = svc.store.write(|c| audit::append(c, now, ev)) {
            tracing::error!(error = %e, "cannot audit an authorisation failure");
        }
        tracing::warn!(
            reason,
            required = target.required.as_str(),
            "request refused"
        );
        reject(problem, reason.to_string())
    };
    let unknown = |problem: Problem, reason: &str| -> DomainError {
        svc.refusals.note(target.source, target.route, reason, now);
        reject(problem, reason.to_string())
    };
    let Some(peer) = peer else {
        return Err(unknown(
            Problem::AuthUnauthenticated,
            "a client certificate is required",
        ));
    };
    let (client, cert) = svc.store.read(|c| -> DomainResult<_> {
        let client = clients::get(c, &peer.fingerprint)?;
        let cert = match client.as_ref().and_then(|cl| cl.serial.clone()) {
            Some(serial) => certs::get(c, &serial)?,
            None => None,
        };
        Ok((client, cert))
    })?;
    let Some(client) = client else {
        return Err(unknown(
            Problem::AuthForbidden,
            "the client certificate is not registered",
        ));
    };
    let actor = Actor::Client {
        role: client.role.as_str().to_string(),
        fingerprint: peer.fingerprint.clone(),
    };
    let cert_ok = cert.as_ref().is_none_or(|c| c.status == CertStatus::Active);
    if client.status != CertStatus::Active || !cert_ok {
        return Err(deny(
            actor,
            Problem::AuthForbidden,
            "the client certificate is suspended or revoked",
        ));
    }
    let t = now.unix_timestamp();
    if t < peer.not_before || t > peer.not_after {
        return Err(deny(
            actor,
            Problem::AuthForbidden,
            "the client certificate is expired or not yet valid",
        ));
    }
    if client.role != target.required {
        return Err(deny(
            actor,
            Problem::AuthForbidden,
            "this client's role may not use this API",
        ));
    }
    Ok(Caller {
        role: client.role,
        fingerprint: peer.fingerprint.clone(),
        name: client.name,
        party_id: client.party_id,
    })
}
