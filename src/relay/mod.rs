//! Relay and settlement (CONTRACT §11; steps 6–10 of the iMS paper; Y.2741
//! 6.4.1.3 payment with rollback).
//!
//! * [`outbox`]: deliveries enqueued in the same transaction as the status
//!   change that causes them; claimed with a lease by any node; what each
//!   delivered answer means for the request (relayed, settled, rolled back,
//!   failed) and the deliveries that follows from it;
//! * [`pain`]: the ISO 20022 pain.001 tmcs sends and the pain.002 it reads;
//! * [`worker`]: the delivery loop over a [`Transport`], with per-target
//!   concurrency, exponential backoff with jitter and a retry cap;
//! * [`outcome`]: the FSP's own outcome report (mode `fsp`), the operator's
//!   view and retry;
//! * [`receipt`]: the payer's signed receipts (step 10);
//! * [`instruments`]: accounts linked by a reserved micro-amount, and
//!   aliases in `accountPayable` (CONTRACT §12).
//!
//! The transport (HTTPS with mTLS and the relay certificate) is not part of
//! this library: the `tmcs` executable (`tmcs-server`, `server/`) plugs it in.

pub mod instruments;
pub mod outbox;
pub mod outcome;
pub mod pain;
pub mod receipt;
pub mod worker;

use std::time::Duration;

use futures_util::future::LocalBoxFuture;

use crate::config::RelaySection;
use crate::states::DeliveryEvent;

/// Who moves the money (CONTRACT §11 `relay.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The FSP moves it and reports back (`POST /v1/fsp/requests/{id}/outcome`).
    Fsp,
    /// tmcs, as the MPS operator, instructs the bank itself; its pain.002 decides.
    FspBank,
}

impl Mode {
    /// The configuration value: `fsp` or `fsp+bank`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fsp => "fsp",
            Mode::FspBank => "fsp+bank",
        }
    }
}

/// The relay's settings (from `[relay]`).
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub enabled: bool,
    pub mode: Mode,
    /// The bank party (mode `fsp+bank`).
    pub bank: Option<String>,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Deliveries in flight per target at once.
    pub per_target: usize,
    /// How long a claim holds a delivery before another node may take it.
    pub lease: Duration,
    /// How often an idle worker looks for due deliveries.
    pub poll: Duration,
    /// This node's name in leases.
    pub node_id: String,
    /// `InitgPty/Nm` of the pain.001.
    pub initiating_party: String,
    pub debtor_agent_bic: Option<String>,
    pub creditor_agent_bic: Option<String>,
    /// The micro-amount's currency (two minor digits).
    pub instrument_currency: crate::ims::Currency,
    /// How long a reserved amount waits for confirmation.
    pub instrument_ttl: Duration,
}

impl RelaySettings {
    pub fn from_config(
        r: &RelaySection,
        organization: &str,
        listen: &str,
    ) -> Result<RelaySettings, String> {
        let mode = match r.mode.as_str() {
            "fsp" => Mode::Fsp,
            "fsp+bank" => Mode::FspBank,
            other => {
                return Err(format!(
                    "relay.mode {other:?}: want \"fsp\" or \"fsp+bank\""
                ))
            }
        };
        let bank = (!r.bank.is_empty()).then(|| r.bank.clone());
        if mode == Mode::FspBank && bank.is_none() && r.enabled {
            return Err("relay.mode \"fsp+bank\" needs relay.bank (the bank party's id)".into());
        }
        let node_id = if r.node_id.is_empty() {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "node".into());
            format!("{host}/{listen}")
        } else {
            r.node_id.clone()
        };
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let instrument_currency = crate::ims::Currency::from_code(&r.instrument_currency)
            .filter(|c| c.exponent() == 2)
            .ok_or_else(|| {
                format!(
                    "relay.instrument_currency {:?}: want an ISO 4217 code with two minor digits",
                    r.instrument_currency
                )
            })?;
        Ok(RelaySettings {
            enabled: r.enabled,
            mode,
            bank,
            timeout: Duration::from_secs(r.timeout_seconds.max(1)),
            max_attempts: r.max_attempts.max(1),
            initial_backoff: Duration::from_millis(r.initial_backoff_ms.max(1)),
            max_backoff: Duration::from_millis(r.max_backoff_ms.max(r.initial_backoff_ms).max(1)),
            per_target: r.per_target_concurrency.max(1),
            lease: Duration::from_secs(r.timeout_seconds.max(1) * 2 + 5),
            poll: Duration::from_millis(r.poll_interval_ms.max(10)),
            node_id,
            initiating_party: if r.initiating_party.is_empty() {
                organization.to_string()
            } else {
                r.initiating_party.clone()
            },
            debtor_agent_bic: opt(&r.debtor_agent_bic),
            creditor_agent_bic: opt(&r.creditor_agent_bic),
            instrument_currency,
            instrument_ttl: Duration::from_secs(r.instrument_ttl_seconds.max(60)),
        })
    }

    /// The wait before attempt `attempt + 1` (attempt ≥ 1 has failed):
    /// exponential from `initial_backoff`, capped at `max_backoff`, with
    /// "equal jitter" (half fixed, half random) so that retries of many
    /// deliveries spread out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.initial_backoff.as_millis();
        let exp = base.saturating_mul(1u128 << attempt.saturating_sub(1).min(30));
        let capped = u64::try_from(exp.min(self.max_backoff.as_millis())).unwrap_or(u64::MAX);
        let half = capped / 2;
        let mut b = [0u8; 8];
        let jitter = match openssl::rand::rand_bytes(&mut b) {
            Ok(()) => u64::from_le_bytes(b) % (half + 1),
            Err(_) => half / 2,
        };
        Duration::from_millis(half + jitter)
    }
}

/// The relay as the domain sees it: its settings, its metrics, and the
/// bell that wakes the worker when a delivery was enqueued.
#[derive(Debug)]
pub struct Relay {
    pub settings: RelaySettings,
    pub metrics: RelayMetrics,
    bell: tokio::sync::Notify,
    calls: tokio::sync::mpsc::UnboundedSender<Call>,
    /// Taken by the worker when it starts.
    inbox: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Call>>>,
}

/// A direct call through the worker's transport, for what must not wait in
/// the outbox (an instrument's reservation: its amount is never stored).
#[derive(Debug)]
pub struct Call {
    pub out: Outgoing,
    pub reply: tokio::sync::oneshot::Sender<Result<Answer, TransportError>>,
    /// After this the caller has given up: the call is not sent (a late
    /// reservation must not land after its release).
    pub deadline: std::time::Instant,
}

impl Relay {
    pub fn new(settings: RelaySettings) -> Result<Relay, prometheus::Error> {
        let (calls, inbox) = tokio::sync::mpsc::unbounded_channel();
        Ok(Relay {
            settings,
            metrics: RelayMetrics::new()?,
            bell: tokio::sync::Notify::new(),
            calls,
            inbox: std::sync::Mutex::new(Some(inbox)),
        })
    }

    /// Sends `out` through the worker's transport and waits for the answer
    /// (at most the relay timeout and a second). Without a running worker
    /// (relay disabled) it answers `Unreachable` after the wait.
    pub async fn call(&self, out: Outgoing) -> Result<Answer, TransportError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let wait = self.settings.timeout + std::time::Duration::from_secs(1);
        // Sending must start early enough to finish within the wait.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        if self
            .calls
            .send(Call {
                out,
                reply,
                deadline,
            })
            .is_err()
        {
            return Err(TransportError::Unreachable(
                "the relay is not running".into(),
            ));
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(TransportError::Other("the relay dropped the call".into())),
            Err(_) => Err(TransportError::Timeout),
        }
    }

    /// The worker's end of the call channel (once).
    pub(crate) fn take_inbox(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Call>> {
        self.inbox.lock().ok().and_then(|mut g| g.take())
    }

    /// Tells the worker that deliveries are due (after the commit that
    /// enqueued them); a no-op cost when it is busy.
    pub fn wake(&self) {
        self.bell.notify_one();
    }

    /// Waits for [`Relay::wake`].
    pub async fn woken(&self) {
        self.bell.notified().await;
    }

    /// Whether the relay delivers anything.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }
}

/// The HTTP method of an [`Outgoing`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Delete,
}

/// One HTTP request to a receiver.
#[derive(Clone)]
pub struct Outgoing {
    pub method: Method,
    pub url: String,
    pub event: DeliveryEvent,
    pub idempotency_key: String,
    pub content_type: String,
    /// Extra headers (e.g. `TMCS-Signer-Certificate` with `signed`).
    pub headers: Vec<(String, String)>,
    /// Wiped when dropped (a reservation's holds the amount and the account).
    pub body: zeroize::Zeroizing<Vec<u8>>,
    pub timeout: Duration,
}

/// Not the body: a reservation's carries the amount and the account.
impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("event", &self.event)
            .field("idempotency_key", &self.idempotency_key)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The receiver's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a delivery attempt got no answer (every kind is retried).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("no answer within the timeout")]
    Timeout,
    #[error("cannot reach the receiver: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Other(String),
}

/// How deliveries leave tmcs: HTTPS with mTLS in production
/// (`tmcs_server::HttpsTransport`). Futures need not be `Send`: the worker runs them
/// on the serving thread's local set.
pub trait Transport {
    fn send<'a>(&'a self, out: &'a Outgoing) -> LocalBoxFuture<'a, Result<Answer, TransportError>>;
}

/// Prometheus collectors of the relay.
#[derive(Clone, Debug)]
pub struct RelayMetrics {
    pub queue_depth: prometheus::IntGauge,
    pub oldest_due_seconds: prometheus::Gauge,
    pub attempts: prometheus::IntCounterVec,
    pub failures: prometheus::IntCounterVec,
}

impl RelayMetrics {
    pub fn new() -> Result<RelayMetrics, prometheus::Error> {
        Ok(RelayMetrics {
            queue_depth: prometheus::IntGauge::new(
                "tmcs_relay_queue_depth",
                "Deliveries pending or in flight",
            )?,
            oldest_due_seconds: prometheus::Gauge::new(
                "tmcs_relay_oldest_due_seconds",
                "Age of the oldest delivery that is due and not yet sent",
            )?,
            attempts: prometheus::IntCounterVec::new(
                prometheus::Opts::new("tmcs_relay_attempts_total", "Delivery attempts by outcome"),
                &["target", "event", "outcome"],
            )?,
            failures: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "tmcs_relay_failures_total",
                    "Deliveries that gave up (failed)",
                ),
                &["target", "event"],
            )?,
        })
    }

    pub fn register(&self, r: &prometheus::Registry) -> Result<(), prometheus::Error> {
        r.register(Box::new(self.queue_depth.clone()))?;
        r.register(Box::new(self.oldest_due_seconds.clone()))?;
        r.register(Box::new(self.attempts.clone()))?;
        r.register(Box::new(self.failures.clone()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let r = RelaySection {
            initial_backoff_ms: 500,
            max_backoff_ms: 60_000,
            ..RelaySection::default()
        };
        let s = RelaySettings::from_config(&r, "tmcs", "127.0.0.1:8443").unwrap();
        for attempt in 1..=12u32 {
            let full = (500u64 << (attempt - 1)).min(60_000);
            for _ in 0..20 {
                let b = s.backoff(attempt).as_millis() as u64;
                assert!(
                    b >= full / 2 && b <= full,
                    "attempt {attempt}: {b} of {full}"
                );
            }
        }
        assert!(RelaySettings::from_config(
            &RelaySection {
                mode: "fsp+bank".into(),
                ..RelaySection::default()
            },
            "tmcs",
            "x"
        )
        .is_err());
    }
}
