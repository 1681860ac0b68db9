//! Device authentication of handset calls (CONTRACT §7):
//! `Authorization: TMCS-Device msisdn="+…",ts="<unix seconds>",sig="<b64>"`,
//! the device key's ECDSA P-256/SHA-256 signature over
//! `tmcs-dev-v1\n<METHOD>\n<path>\n<msisdn>\n<ts>\n`, `ts` within ±300 s.
//! A state-changing call is accepted once per signature.
//!
//! [`authenticate`] returns the subscriber row it read, so the handler's
//! domain call does not read it again.

use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;

use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::error::{reject, DomainError, DomainResult, Problem};
use crate::store::subscribers::{self, SubscriberRow};

/// Allowed distance between the header's `ts` and our clock.
pub const DEVICE_SKEW_SECONDS: i64 = 300;

/// What a handset call presents.
#[derive(Debug, Clone, Copy)]
pub struct DeviceCall<'a> {
    /// The `Authorization` header, if any.
    pub header: Option<&'a str>,
    pub method: &'a str,
    /// The request path as sent (what the device signed).
    pub path: &'a str,
    /// The route pattern (for the audit event).
    pub route: &'a str,
}

/// `TMCS-Device msisdn="+…",ts="<unix seconds>",sig="<b64>"`
pub fn parse_device_header(h: &str) -> Option<(String, i64, Vec<u8>)> {
    let rest = h.strip_prefix("TMCS-Device ")?;
    let (mut msisdn, mut ts, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.strip_prefix('"')?.strip_suffix('"')?;
        match k {
            "msisdn" if msisdn.is_none() => msisdn = Some(v.to_string()),
            "ts" if ts.is_none() => ts = Some(v.parse::<i64>().ok()?),
            "sig" if sig.is_none() => {
                sig = Some(base64::engine::general_purpose::STANDARD.decode(v).ok()?)
            }
            _ => return None,
        }
    }
    Some((msisdn?, ts?, sig?))
}

/// The bytes the device key signs.
pub fn device_message(method: &str, path: &str, msisdn: &str, ts: i64) -> String {
    format!("tmcs-dev-v1\n{method}\n{path}\n{msisdn}\n{ts}\n")
}

/// Checks the device signature of `call`; returns the subscriber's row.
/// Every refusal is `auth.device_signature` and one `auth.denied` event.
pub fn authenticate(svc: &Services, call: DeviceCall<'_>) -> DomainResult<SubscriberRow> {
    let now = svc.clock.now();
    let deny = |actor: Actor, reason: &str| -> DomainError {
        let ev = NewEvent::of(
            &actor,
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
        reject(Problem::AuthDeviceSignature, reason.to_string())
    };
    let Some((msisdn, ts, sig)) = call.header.and_then(parse_device_header) else {
        return Err(deny(
            Actor::Anonymous,
            "missing or malformed TMCS-Device authorization",
        ));
    };
    if now.unix_timestamp().abs_diff(ts) > DEVICE_SKEW_SECONDS.unsigned_abs() {
        return Err(deny(
            Actor::Anonymous,
            "device timestamp outside the allowed skew",
        ));
    }
    let Some(s) = svc.store.read(|c| subscribers::by_msisdn(c, &msisdn))? else {
        return Err(deny(Actor::Anonymous, "unknown device"));
    };
    let actor = Actor::Subscriber(s.id.clone());
    let Some(spki) = s
        .device_spki
        .as_deref()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
    else {
        return Err(deny(actor, "no device key is registered"));
    };
    let name = format!("spki:{}", hex::encode(openssl::sha::sha256(&spki)));
    let ok = svc
        .keys
        .get_or_load(&name, || crate::keycache::from_spki_der(&spki))
        .and_then(|k| {
            let mut v = Verifier::new(MessageDigest::sha256(), &k.key)?;
            v.verify_oneshot(
                &sig,
                device_message(call.method, call.path, &msisdn, ts).as_bytes(),
            )
        })
        .unwrap_or(false);
    if !ok {
        return Err(deny(actor, "device signature does not verify"));
    }
    // A state-changing call is accepted once per signature: a captured
    // request cannot be played again inside the skew window.
    if call.method != "GET" {
        let sig_hash = hex::encode(openssl::sha::sha256(&sig));
        let until = ts.saturating_add(DEVICE_SKEW_SECONDS + 1);
        let fresh = svc
            .store
            .write(|c| crate::store::replay::first_use(c, &sig_hash, until))?;
        if !fresh {
            return Err(deny(
                actor,
                "device signature already used; sign each request anew",
            ));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_header_parses_strictly() {
        let (m, ts, sig) =
            parse_device_header(r#"TMCS-Device msisdn="+4912345678",ts="1700000000",sig="AAEC""#)
                .unwrap();
        assert_eq!(
            (m.as_str(), ts, sig),
            ("+4912345678", 1_700_000_000, vec![0, 1, 2])
        );
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
        assert_eq!(
            device_message("GET", "/v1/handset/requests", "+4912345678", 5),
            "tmcs-dev-v1\nGET\n/v1/handset/requests\n+4912345678\n5\n"
        );
    }
}
