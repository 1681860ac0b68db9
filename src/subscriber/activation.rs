//! Handset activation (CONTRACT §7, Y.2741 6.4.2.2): the one-time code and
//! the new PIN arrive in a PIN block; the code is checked in constant time
//! against its keyed hash with the shared try counter; on success tmcs
//! stores the device key and the PIN verifier and, unless the subscriber
//! still has a usable key, generates one in the HSM and issues its
//! certificate.
//!
//! Hardening against strangers (issue #8, findings 6 and 7):
//! * nothing tells a number with a pending activation from one without:
//!   an unknown, active or disconnected number gets the same
//!   `activation.bad_code`, with attempts counting down per number (from
//!   any source) as they would for a pending one, after about the same
//!   time ([`ActivationGuard`]);
//!   a PIN block that does not decrypt or bind counts as a wrong code; the
//!   PIN rules and the code's expiry are told only to whoever knows the code;
//! * the HSM's ECDH runs only for a pending subscriber;
//! * after a few free misses, each further miss from one source makes it
//!   wait twice as long before its next attempt (`429` with `Retry-After`),
//!   so locking out many subscribers takes long and shows in the metrics
//!   and the audit log.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::pin::{check_in_tx, Check};
use super::renewal::{new_key_and_cert, record_new_cert};
use super::{activation_hash, pinblock, require_msisdn, subject, SubscriberState};
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, BlockedBy, NewEvent};
use crate::error::{internal, reject, reject_with_attempts, DomainError, DomainResult, Problem};
use crate::pki::CertInfo;
use crate::states::CertStatus;
use crate::store::certs;
use crate::store::subscribers::{self, SubscriberRow};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub msisdn: String,
    pub activation_code: Zeroizing<String>,
    pub device_public_key: String,
    pub pin_block: Zeroizing<String>,
}

impl std::fmt::Debug for ActivateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivateRequest")
            .field("msisdn", &super::mask_msisdn(&self.msisdn))
            .finish_non_exhaustive()
    }
}

/// `200` of `POST /v1/handset/activate`.
#[derive(Debug, serde::Serialize)]
pub struct Activated {
    pub certificate: String,
    pub chain: String,
    pub serial: String,
}

/// Decodes and checks a device public key (base64 SPKI DER, P-256).
pub fn parse_device_key(b64: &str) -> DomainResult<Vec<u8>> {
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| reject(Problem::RequestInvalid, "device_public_key is not base64"))?;
    let key = openssl::pkey::PKey::public_key_from_der(&der).map_err(|_| {
        reject(
            Problem::RequestInvalid,
            "device_public_key is not a SubjectPublicKeyInfo",
        )
    })?;
    let ok = key
        .ec_key()
        .ok()
        .and_then(|k| k.group().curve_name())
        .is_some_and(|n| n == openssl::nid::Nid::X9_62_PRIME256V1);
    if !ok {
        return Err(reject(
            Problem::RequestInvalid,
            "device_public_key must be EC P-256",
        ));
    }
    Ok(der)
}

/// Misses a source may make before it has to wait.
const FREE_MISSES: u32 = 5;
/// The first wait, doubled with each further miss, up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// A source's misses are forgotten after this long without one.
const MISS_MEMORY: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Clone, Copy)]
struct Misses {
    count: u32,
    last: Instant,
}

/// Per-source activation misses and decoy counters (bounded, in memory;
/// each node keeps its own).
pub struct ActivationGuard {
    misses: quick_cache::sync::Cache<IpAddr, Misses>,
    /// Misses on numbers without a pending activation, by number (shared
    /// by all sources, as a pending subscriber's counter is).
    decoys: quick_cache::sync::Cache<String, u32>,
    /// Typical duration of a real wrong-code answer (ns, moving average).
    miss_nanos: AtomicU64,
    pub attempts: prometheus::IntCounterVec,
}

impl std::fmt::Debug for ActivationGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivationGuard").finish_non_exhaustive()
    }
}

impl ActivationGuard {
    pub fn new() -> Result<ActivationGuard, prometheus::Error> {
        Ok(ActivationGuard {
            misses: quick_cache::sync::Cache::new(100_000),
            decoys: quick_cache::sync::Cache::new(100_000),
            miss_nanos: AtomicU64::new(0),
            attempts: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "tmcs_activation_attempts_total",
                    "Activation attempts by outcome",
                ),
                &["outcome"],
            )?,
        })
    }

    fn count(&self, outcome: &str) {
        self.attempts.with_label_values(&[outcome]).inc();
    }

    /// How long `source` must still wait before its next attempt.
    fn wait(&self, source: Option<IpAddr>) -> Option<Duration> {
        let m = self.misses.get(&source?)?;
        if m.last.elapsed() > MISS_MEMORY {
            return None;
        }
        let over = m.count.checked_sub(FREE_MISSES + 1)?;
        let wait = FIRST_WAIT
            .checked_mul(1u32.checked_shl(over).unwrap_or(u32::MAX))
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT);
        wait.checked_sub(m.last.elapsed())
    }

    /// One more miss of `source`.
    fn miss(&self, source: Option<IpAddr>) {
        let Some(ip) = source else {
            return;
        };
        let count = match self.misses.get(&ip) {
            Some(m) if m.last.elapsed() <= MISS_MEMORY => m.count.saturating_add(1),
            _ => 1,
        };
        self.misses.insert(
            ip,
            Misses {
                count,
                last: Instant::now(),
            },
        );
    }

    /// The decoy's attempts left for `msisdn` after one more miss (from
    /// any source, like a pending subscriber's counter).
    fn decoy_miss(&self, msisdn: &str, max: u32) -> Option<u32> {
        let used = self.decoys.get(msisdn).unwrap_or(0).saturating_add(1);
        self.decoys.insert(msisdn.to_string(), used);
        max.checked_sub(used)
    }

    fn record_miss_time(&self, took: Duration) {
        let n = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.miss_nanos.load(Ordering::Relaxed);
        let avg = if old == 0 { n } else { (old * 7 + n) / 8 };
        self.miss_nanos.store(avg, Ordering::Relaxed);
    }

    /// Waits out the rest of a typical real miss, so a decoy answer takes
    /// about as long as a real one.
    #[allow(clippy::disallowed_methods)] // a deliberate pause on the blocking pool
    fn pad_to_typical_miss(&self, started: Instant) {
        let typical = Duration::from_nanos(self.miss_nanos.load(Ordering::Relaxed));
        if let Some(rest) = typical.checked_sub(started.elapsed()) {
            std::thread::sleep(rest.min(Duration::from_millis(250)));
        }
    }
}

fn bad_code(left: u32) -> DomainError {
    reject_with_attempts(
        Problem::ActivationBadCode,
        if left > 0 {
            format!("wrong activation code; {left} attempts left")
        } else {
            "wrong activation code; no attempts left, the subscriber is blocked".to_string()
        },
        left,
    )
}

fn blocked() -> DomainError {
    reject(
        Problem::SubscriberBlocked,
        "too many wrong activation codes; the subscriber is blocked; ask the operator",
    )
}

/// The answer for a number without a pending activation: like a wrong code.
fn decoy(
    svc: &Services,
    source: Option<IpAddr>,
    msisdn: &str,
    started: Instant,
    now: OffsetDateTime,
) -> DomainError {
    let guard = &svc.activation;
    guard.count("no_pending_activation");
    guard.miss(source);
    svc.refusals.note(
        source,
        "/v1/handset/activate",
        "no activation is pending",
        now,
    );
    let left = guard.decoy_miss(msisdn, svc.pins.settings.max_attempts);
    guard.pad_to_typical_miss(started);
    match left {
        Some(left) => bad_code(left),
        None => blocked(),
    }
}

/// A wrong code (or a PIN block that does not decrypt or bind) for a
/// pending subscriber: counted, and audited, in one transaction.
fn count_miss(svc: &Services, s: &SubscriberRow, now: OffsetDateTime) -> DomainResult<Check> {
    let max = svc.pins.settings.max_attempts;
    let actor = Actor::Subscriber(s.id.clone());
    svc.store.write(|c| -> DomainResult<Check> {
        // An impossible candidate: counts the attempt, never matches.
        let check = check_in_tx(
            c,
            &s.id,
            SubscriberState::PendingActivation,
            max,
            &[],
            |_| Ok(None),
            now.unix_timestamp(),
        )?;
        if let Check::Wrong { left } = check {
            audit::append_all(c, now, failure_events(&actor, &s.id, left, max))?;
        }
        Ok(check)
    })
}

fn failure_events(actor: &Actor, id: &str, left: u32, max: u32) -> Vec<NewEvent> {
    let mut events = vec![NewEvent::of(
        actor,
        subject(id),
        AuditEvent::SubscriberActivationFailed {
            attempts_left: left,
        },
    )];
    if left == 0 {
        events.push(NewEvent::of(
            &Actor::System,
            subject(id),
            AuditEvent::SubscriberBlocked {
                by: BlockedBy::AttemptLimit,
                max_attempts: Some(max),
            },
        ));
    }
    events
}

fn miss_answer(check: Check) -> DomainError {
    match check {
        Check::Wrong { left } => bad_code(left),
        Check::Blocked | Check::Correct => blocked(),
    }
}

/// `POST /v1/handset/activate` from `source`.
pub fn activate(
    svc: &Services,
    req: ActivateRequest,
    source: Option<IpAddr>,
) -> DomainResult<Activated> {
    let started = Instant::now();
    let now = svc.clock.now();
    let guard = &svc.activation;
    if let Some(wait) = guard.wait(source) {
        guard.count("throttled");
        return Err(DomainError::Throttled {
            detail: "too many wrong activation attempts from this address; wait".into(),
            retry_after: wait,
        });
    }
    require_msisdn(&req.msisdn)?;
    let device = parse_device_key(&req.device_public_key)?;

    let s = match svc.store.read(|c| subscribers::by_msisdn(c, &req.msisdn))? {
        Some(s) if s.state == SubscriberState::PendingActivation => s,
        Some(s) if s.state == SubscriberState::Blocked => {
            guard.count("blocked");
            return Err(blocked());
        }
        _ => return Err(decoy(svc, source, &req.msisdn, started, now)),
    };

    // A pending subscriber: now the HSM work. A PIN block that does not
    // open, or is bound to another number or code, is a wrong code.
    let opened = pinblock::open(
        svc.custody.as_ref(),
        &svc.pki.keys.transport,
        &svc.pki.transport.point,
        &req.pin_block,
    );
    let plain = match opened {
        Ok(p) => p,
        Err(e) if e.problem() == Some(Problem::PinblockInvalid) => {
            guard.miss(source);
            guard.count("bad_pin_block");
            let check = count_miss(svc, &s, now)?;
            guard.record_miss_time(started.elapsed());
            return Err(miss_answer(check));
        }
        Err(e) => return Err(e),
    };
    let bound = pinblock::parse_activate(&plain).ok().filter(|p| {
        p.msisdn == req.msisdn
            && super::pin::ct_eq(p.code.as_bytes(), req.activation_code.as_bytes())
    });
    let Some(p) = bound else {
        guard.miss(source);
        guard.count("bad_pin_block");
        let check = count_miss(svc, &s, now)?;
        guard.record_miss_time(started.elapsed());
        return Err(miss_answer(check));
    };

    // The code, counted and compared in one transaction.
    let candidate = activation_hash(svc, &s.id, &p.code)?;
    let max = svc.pins.settings.max_attempts;
    let actor = Actor::Subscriber(s.id.clone());
    let check = svc.store.write(|c| -> DomainResult<Check> {
        let locked = subscribers::lock_by_id(c, &s.id)?;
        let stored = locked
            .as_ref()
            .and_then(|r| r.activation_hash.as_deref())
            .and_then(|h| hex::decode(h).ok());
        let check = check_in_tx(
            c,
            &s.id,
            SubscriberState::PendingActivation,
            max,
            &candidate,
            |_| Ok(stored),
            now.unix_timestamp(),
        )?;
        if let Check::Wrong { left } = check {
            audit::append_all(c, now, failure_events(&actor, &s.id, left, max))?;
        }
        Ok(check)
    })?;
    if check != Check::Correct {
        guard.miss(source);
        guard.count("wrong_code");
        guard.record_miss_time(started.elapsed());
        return Err(miss_answer(check));
    }
    // Only whoever knows the code learns about its expiry and the PIN rules.
    if s.activation_expires_at
        .is_none_or(|t| now.unix_timestamp() > t)
    {
        guard.count("expired");
        return Err(reject(
            Problem::ActivationExpired,
            "the activation code has expired; ask the operator for a new one",
        ));
    }
    svc.pins.check_rules(&p.pin)?;
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| internal(e.to_string()))?;
    let verifier = svc.pins.verifier(svc.custody.as_ref(), &salt, &p.pin)?;
    let done = complete(
        svc,
        &s,
        &device,
        req.device_public_key.trim(),
        &salt,
        &verifier,
        now,
    )?;
    guard.count("activated");
    Ok(done)
}

/// Stores the device key and PIN verifier and makes the subscriber active,
/// with a new key and certificate unless its current one is still active.
fn complete(
    svc: &Services,
    s: &SubscriberRow,
    device: &[u8],
    device_b64: &str,
    salt: &[u8],
    verifier: &[u8],
    now: OffsetDateTime,
) -> DomainResult<Activated> {
    let actor = Actor::Subscriber(s.id.clone());
    // A key made inside the transaction, to destroy if it does not commit.
    let mut fresh: Option<(super::keys::NewKey, CertInfo)> = None;
    let result = svc.store.write(|c| -> DomainResult<(String, String)> {
        let Some(mut cur) = subscribers::lock_by_id(c, &s.id)? else {
            return Err(internal("the subscriber vanished during activation"));
        };
        // Still the same pending activation the code was checked against.
        if cur.state != SubscriberState::PendingActivation
            || cur.activation_hash != s.activation_hash
        {
            return Err(blocked());
        }
        let mut events = Vec::new();
        // Keep a still-active key (re-activation after unblock); else make one.
        let keep_current = match &cur.cert_serial {
            Some(serial) => certs::get(c, serial)?.is_some_and(|r| r.status == CertStatus::Active),
            None => false,
        };
        if !keep_current {
            fresh = Some(new_key_and_cert(svc, c, &cur, now)?);
        }
        if let Some((key, cert)) = &fresh {
            events.extend(record_new_cert(c, &actor, &cur, key, cert, now)?);
            cur.key_id = Some(key.id().to_hex());
            cur.cert_serial = Some(cert.serial_hex.clone());
        }
        let serial = cur
            .cert_serial
            .clone()
            .ok_or_else(|| internal("activated subscriber without certificate"))?;
        let pem = certs::get(c, &serial)?
            .map(|r| r.pem)
            .ok_or_else(|| internal("certificate row missing"))?;
        cur.state = SubscriberState::Active;
        cur.activation_hash = None;
        cur.activation_expires_at = None;
        cur.attempts = 0;
        cur.device_spki = Some(device_b64.to_string());
        cur.pin_salt = Some(hex::encode(salt));
        cur.pin_verifier = Some(hex::encode(verifier));
        cur.updated_at = now.unix_timestamp();
        subscribers::save(c, &cur)?;
        events.push(NewEvent::of(
            &actor,
            subject(&cur.id),
            AuditEvent::SubscriberActivated {
                certificate: serial.clone(),
                device_key_sha256: hex::encode(openssl::sha::sha256(device)),
                new_key: fresh.is_some(),
            },
        ));
        events.push(NewEvent::of(
            &actor,
            subject(&cur.id),
            AuditEvent::PinSet {},
        ));
        audit::append_all(c, now, events)?;
        Ok((serial, pem))
    });
    match result {
        Ok((serial, pem)) => Ok(Activated {
            certificate: pem,
            chain: format!("{}{}", svc.pki.issuing.info.pem, svc.pki.root.info.pem),
            serial,
        }),
        Err(e) => {
            if let Some((key, _)) = &fresh {
                super::keys::discard(svc, key);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_beyond_the_free_ones_double_the_wait() {
        let g = ActivationGuard::new().unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..FREE_MISSES {
            g.miss(Some(ip));
            assert!(g.wait(Some(ip)).is_none());
        }
        g.miss(Some(ip));
        let first = g.wait(Some(ip)).unwrap();
        assert!(first <= FIRST_WAIT * 2 && first > FIRST_WAIT / 2);
        g.miss(Some(ip));
        let second = g.wait(Some(ip)).unwrap();
        assert!(second > first, "{second:?} > {first:?}");
        assert!(g.wait(Some("192.0.2.10".parse().unwrap())).is_none());
        assert!(g.wait(None).is_none());
    }

    #[test]
    fn decoys_count_down_like_a_pending_subscriber() {
        let g = ActivationGuard::new().unwrap();
        let left: Vec<Option<u32>> = (0..4).map(|_| g.decoy_miss("+4915100000001", 3)).collect();
        assert_eq!(left, vec![Some(2), Some(1), Some(0), None]);
    }
}
