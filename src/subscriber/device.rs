//! Device authentication of handset calls (CONTRACT §7, plus `tmcs-dev-v2`):
//!
//! * v1: `Authorization: TMCS-Device msisdn="+…",ts="<unix s>",sig="<b64>"`,
//!   the device key's ECDSA P-256/SHA-256 signature over
//!   `tmcs-dev-v1\n<METHOD>\n<path>\n<msisdn>\n<ts>\n`;
//! * v2 (additive): the same with `body_sha256="<b64url SHA-256 of the
//!   body>"` before `sig`, signed as the v1 lines plus that digest and
//!   `\n` under the tag `tmcs-dev-v2`, in low-S form. The body must hash to it.
//!
//! `ts` is within ±300 s. A state-changing call is accepted once: its
//! replay key is the request's identity (msisdn, ts, method, path) plus,
//! for v2, the body digest, and for v1 the signature with `s` reduced to
//! its low form — so the malleated twin (r, n−s) of a captured signature is
//! the same key (issue #8, finding 1).
//!
//! Every refusal is the same answer, `auth.device_signature` with one
//! detail, after the same work (a signature check against a decoy key when
//! there is no key to check against); the reason goes to the audit log only
//! (finding 6). A caller who proved nothing is counted per source
//! (`audit::refusals`), not one event each (finding 5).

use std::net::IpAddr;
use std::sync::OnceLock;

use base64::Engine;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};

use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::error::{reject, DomainError, DomainResult, Problem};
use crate::store::subscribers::{self, SubscriberRow};

/// Allowed distance between the header's `ts` and our clock.
pub const DEVICE_SKEW_SECONDS: i64 = 300;

/// The one answer to every failed device authentication.
pub const REFUSED: &str = "the device signature is missing or invalid";

/// What a handset call presents.
#[derive(Debug, Clone, Copy)]
pub struct DeviceCall<'a> {
    /// The `Authorization` header, if any.
    pub header: Option<&'a str>,
    pub method: &'a str,
    /// The request path as sent (what the device signed).
    pub path: &'a str,
    /// The route pattern (for the audit).
    pub route: &'a str,
    /// The client's address (for counting refusals).
    pub source: Option<IpAddr>,
}

/// A parsed `TMCS-Device` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHeader {
    pub msisdn: String,
    pub ts: i64,
    pub sig: Vec<u8>,
    /// v2 only: the SHA-256 of the body the signature covers.
    pub body_sha256: Option<[u8; 32]>,
}

/// A handset that proved its device key: the subscriber row that was read,
/// and (v2) the body digest the handler must find.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub subscriber: SubscriberRow,
    pub body_sha256: Option<[u8; 32]>,
}

/// `TMCS-Device msisdn="+…",ts="<unix seconds>"[,body_sha256="…"],sig="<b64>"`
pub fn parse_device_header(h: &str) -> Option<DeviceHeader> {
    let rest = h.strip_prefix("TMCS-Device ")?;
    let (mut msisdn, mut ts, mut sig, mut body) = (None, None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.strip_prefix('"')?.strip_suffix('"')?;
        match k {
            "msisdn" if msisdn.is_none() => msisdn = Some(v.to_string()),
            "ts" if ts.is_none() => ts = Some(v.parse::<i64>().ok()?),
            "sig" if sig.is_none() => {
                sig = Some(base64::engine::general_purpose::STANDARD.decode(v).ok()?)
            }
            "body_sha256" if body.is_none() => {
                let d = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(v)
                    .ok()?;
                body = Some(<[u8; 32]>::try_from(d.as_slice()).ok()?)
            }
            _ => return None,
        }
    }
    Some(DeviceHeader {
        msisdn: msisdn?,
        ts: ts?,
        sig: sig?,
        body_sha256: body,
    })
}

/// The bytes the device key signs (v1).
pub fn device_message(method: &str, path: &str, msisdn: &str, ts: i64) -> String {
    format!("tmcs-dev-v1\n{method}\n{path}\n{msisdn}\n{ts}\n")
}

/// The bytes the device key signs (v2).
pub fn device_message_v2(
    method: &str,
    path: &str,
    msisdn: &str,
    ts: i64,
    body_sha256: &[u8; 32],
) -> String {
    let d = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body_sha256);
    format!("tmcs-dev-v2\n{method}\n{path}\n{msisdn}\n{ts}\n{d}\n")
}

/// The P-256 group order `n`.
fn order() -> Option<&'static BigNum> {
    static N: OnceLock<Option<BigNum>> = OnceLock::new();
    N.get_or_init(|| {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).ok()?;
        let mut ctx = BigNumContext::new().ok()?;
        let mut n = BigNum::new().ok()?;
        group.order(&mut n, &mut ctx).ok()?;
        Some(n)
    })
    .as_ref()
}

/// (r, min(s, n−s)) of a DER ECDSA signature, 32 bytes each, and whether
/// it was already in low-S form and canonical DER.
fn normalized(sig: &[u8]) -> Option<(Vec<u8>, Vec<u8>, bool)> {
    let parsed = EcdsaSig::from_der(sig).ok()?;
    let n = order()?;
    let mut half = BigNum::new().ok()?;
    half.rshift1(n).ok()?;
    let s = parsed.s();
    let (low, was_low) = if s > &*half {
        let mut low = BigNum::new().ok()?;
        low.checked_sub(n, s).ok()?;
        (low, false)
    } else {
        (s.to_owned().ok()?, true)
    };
    let canonical = parsed.to_der().ok()? == sig;
    Some((
        parsed.r().to_vec_padded(32).ok()?,
        low.to_vec_padded(32).ok()?,
        was_low && canonical,
    ))
}

/// A key nobody holds, checked against when there is no device key, so a
/// refusal costs the same whether the MSISDN is known or not.
fn decoy_key() -> Option<&'static PKey<Public>> {
    static KEY: OnceLock<Option<PKey<Public>>> = OnceLock::new();
    KEY.get_or_init(|| {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).ok()?;
        let k = EcKey::generate(&group).ok()?;
        let public = EcKey::from_public_key(&group, k.public_key()).ok()?;
        PKey::from_ec_key(public).ok()
    })
    .as_ref()
}

fn verify(key: &PKey<Public>, sig: &[u8], msg: &[u8]) -> bool {
    crate::pki::sha256_signature_verifies(key, msg, sig)
}

/// Checks the device signature of `call`; returns the subscriber row.
pub fn authenticate(svc: &Services, call: DeviceCall<'_>) -> DomainResult<Authenticated> {
    let now = svc.clock.now();
    // A caller who proved nothing: counted per source, one answer.
    let refuse = |reason: &str| -> DomainError {
        svc.refusals.note(call.source, call.route, reason, now);
        reject(Problem::AuthDeviceSignature, REFUSED)
    };
    let Some(h) = call.header.and_then(parse_device_header) else {
        return Err(refuse("missing or malformed TMCS-Device authorization"));
    };
    if now.unix_timestamp().abs_diff(h.ts) > DEVICE_SKEW_SECONDS.unsigned_abs() {
        return Err(refuse("device timestamp outside the allowed skew"));
    }
    let msg = match &h.body_sha256 {
        Some(d) => device_message_v2(call.method, call.path, &h.msisdn, h.ts, d),
        None => device_message(call.method, call.path, &h.msisdn, h.ts),
    };
    let s = svc.store.read(|c| subscribers::by_msisdn(c, &h.msisdn))?;
    let key = s
        .as_ref()
        .and_then(|s| s.device_spki.as_deref())
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|spki| {
            let name = format!("spki:{}", hex::encode(openssl::sha::sha256(&spki)));
            svc.keys
                .get_or_load(&name, || crate::keycache::from_spki_der(&spki))
                .ok()
        });
    let verified = match (&key, decoy_key()) {
        (Some(k), _) => verify(&k.key, &h.sig, msg.as_bytes()),
        (None, Some(decoy)) => {
            // Same work as a real check; the answer is no either way.
            let _ = verify(decoy, &h.sig, msg.as_bytes());
            false
        }
        (None, None) => false,
    };
    let Some(s) = s else {
        return Err(refuse("unknown device"));
    };
    if key.is_none() {
        return Err(refuse("no device key is registered"));
    }
    if !verified {
        return Err(refuse("device signature does not verify"));
    }
    let Some((r, low_s, strict)) = normalized(&h.sig) else {
        return Err(refuse("device signature is not DER"));
    };
    if h.body_sha256.is_some() && !strict {
        return Err(refuse("tmcs-dev-v2 signature not in low-S canonical form"));
    }
    // A state-changing call is accepted once (within the skew window).
    if call.method != "GET" {
        let mut id = format!(
            "{}|{}|{}|{}|{}",
            h.msisdn,
            h.ts,
            call.method,
            call.path,
            if h.body_sha256.is_some() { "v2" } else { "v1" }
        )
        .into_bytes();
        match &h.body_sha256 {
            Some(d) => id.extend_from_slice(d),
            None => {
                id.extend_from_slice(&r);
                id.extend_from_slice(&low_s);
            }
        }
        let replay_key = hex::encode(openssl::sha::sha256(&id));
        let until = h.ts.saturating_add(DEVICE_SKEW_SECONDS + 1);
        let fresh = svc
            .store
            .write(|c| crate::store::replay::first_use(c, &replay_key, until))?;
        if !fresh {
            return Err(denied(
                svc,
                &s,
                call,
                "device request already used; sign each request anew",
            ));
        }
    }
    Ok(Authenticated {
        subscriber: s,
        body_sha256: h.body_sha256,
    })
}

/// The body of a v2 call must hash to the digest its signature covers.
pub fn check_body(
    svc: &Services,
    auth: &Authenticated,
    call: DeviceCall<'_>,
    body: &[u8],
) -> DomainResult<()> {
    match auth.body_sha256 {
        Some(d) if d != openssl::sha::sha256(body) => Err(denied(
            svc,
            &auth.subscriber,
            call,
            "the body does not match the signed body_sha256",
        )),
        _ => Ok(()),
    }
}

/// A refusal of a call signed with the subscriber's device key: its own event.
fn denied(svc: &Services, s: &SubscriberRow, call: DeviceCall<'_>, reason: &str) -> DomainError {
    let now = svc.clock.now();
    let ev = NewEvent::of(
        &Actor::Subscriber(s.id.clone()),
        None,
        AuditEvent::AuthDenied {
            method: Some(call.method.to_string()),
            route: Some(call.route.to_string()),
            required_role: None,
            reason: reason.to_string(),
            tier: None,
        },
    );
    if let Err(e) = svc.store.write(|c| audit::append(c, now, ev)) {
        tracing::error!(error = %e, "cannot audit a device authentication failure");
    }
    reject(Problem::AuthDeviceSignature, REFUSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_header_parses_strictly() {
        let h =
            parse_device_header(r#"TMCS-Device msisdn="+4912345678",ts="1700000000",sig="AAEC""#)
                .unwrap();
        assert_eq!(
            (h.msisdn.as_str(), h.ts, h.sig, h.body_sha256),
            ("+4912345678", 1_700_000_000, vec![0, 1, 2], None)
        );
        let d = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
        let h = parse_device_header(&format!(
            r#"TMCS-Device msisdn="+49",ts="1",body_sha256="{d}",sig="AA==""#
        ))
        .unwrap();
        assert_eq!(h.body_sha256, Some([7u8; 32]));
        assert!(parse_device_header(r#"Bearer x"#).is_none());
        assert!(parse_device_header(r#"TMCS-Device msisdn="+49",ts="x",sig="AA==""#).is_none());
        assert!(
            parse_device_header(r#"TMCS-Device msisdn="+49",ts="1",sig="AA==",extra="1""#)
                .is_none()
        );
        assert!(
            parse_device_header(r#"TMCS-Device msisdn="+49",msisdn="+48",ts="1",sig="AA==""#)
                .is_none()
        );
        assert!(parse_device_header(
            r#"TMCS-Device msisdn="+49",ts="1",body_sha256="AAAA",sig="AA==""#
        )
        .is_none());
        assert_eq!(
            device_message("GET", "/v1/handset/requests", "+4912345678", 5),
            "tmcs-dev-v1\nGET\n/v1/handset/requests\n+4912345678\n5\n"
        );
        assert_eq!(
            device_message_v2("POST", "/p", "+49", 5, &[0u8; 32]),
            "tmcs-dev-v2\nPOST\n/p\n+49\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
        );
    }

    /// (r, s) and (r, n − s) are both valid; they normalise to one key, and
    /// only the low one is strict.
    #[test]
    fn malleated_twins_normalise_alike() {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let digest = openssl::sha::sha256(b"m");
        let sig = EcdsaSig::sign(&digest, &key).unwrap();
        let n = order().unwrap();
        let mut twin_s = BigNum::new().unwrap();
        twin_s.checked_sub(n, sig.s()).unwrap();
        let twin = EcdsaSig::from_private_components(sig.r().to_owned().unwrap(), twin_s).unwrap();
        assert!(twin.verify(&digest, &key).unwrap(), "the twin verifies too");
        let (r1, s1, strict1) = normalized(&sig.to_der().unwrap()).unwrap();
        let (r2, s2, strict2) = normalized(&twin.to_der().unwrap()).unwrap();
        assert_eq!((r1, s1), (r2, s2));
        assert_ne!(strict1, strict2, "exactly one of the twins is low-S");
    }
}
