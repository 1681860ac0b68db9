//! The delivery loop. One per node, on the serving thread: it claims due
//! deliveries target by target (at most `relay.per_target_concurrency` in
//! flight per target, so one slow bank cannot hold up the FSPs), sends each
//! through the [`Transport`] and records the answer with its consequences
//! ([`outbox::record`]). Database and HSM work runs on the blocking pool.
//!
//! * At start the node puts back the deliveries it had leased before it
//!   stopped (a crash leaves them `delivering`); leases of a node that does
//!   not come back run out and any node takes them over.
//! * A claim counts an attempt before sending, so a delivery that crashes
//!   its node on every try still reaches `relay.max_attempts`.
//! * Sending twice is possible (a crash after the receiver took it and
//!   before the answer was recorded); receivers deduplicate on
//!   `Idempotency-Key`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::outbox::{self, Attempt, Recorded};
use super::{Call, Method, Outgoing, Transport};
use crate::app::Services;
use crate::error::{internal, DomainResult};
use crate::states::{CertStatus, DeliveryEvent};
use crate::store::deliveries::{self, DeliveryRow};
use crate::store::parties;

/// Targets looked at per pass.
const TARGETS_PER_PASS: i64 = 256;

fn now_ms(svc: &Services) -> i64 {
    i64::try_from(svc.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

async fn blocking<T, F>(svc: &Services, f: F) -> DomainResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Services) -> DomainResult<T> + Send + 'static,
{
    let svc = svc.clone();
    match actix_web::rt::task::spawn_blocking(move || f(&svc)).await {
        Ok(r) => r,
        Err(e) => Err(internal(format!("relay task: {e}"))),
    }
}

/// Runs the relay of this node until the process ends. Returns at once when
/// `relay.enabled` is false.
pub async fn run(svc: Services, transport: Rc<dyn Transport>) {
    let relay = svc.relay.clone();
    if !relay.enabled() {
        tracing::info!("relay disabled");
        return;
    }
    let node = relay.settings.node_id.clone();
    // Deliveries this node left in flight when it stopped: due again now.
    loop {
        let n = node.clone();
        match blocking(&svc, move |s| {
            let now = now_ms(s);
            Ok(s.store
                .write(|c| deliveries::release_leases_of(c, &n, now))?)
        })
        .await
        {
            Ok(0) => break,
            Ok(n) => {
                tracing::info!(deliveries = n, "resuming deliveries left in flight");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "relay: cannot read the outbox; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::info!(node = %node, mode = relay.settings.mode.as_str(), "relay running");
    // Direct calls (an instrument's reservation) go out at once.
    if let Some(mut inbox) = relay.take_inbox() {
        let transport = transport.clone();
        actix_web::rt::spawn(async move {
            while let Some(Call {
                out,
                reply,
                deadline,
            }) = inbox.recv().await
            {
                if reply.is_closed() || std::time::Instant::now() > deadline {
                    // The caller gave up (and released what this would reserve).
                    let _ = reply.send(Err(super::TransportError::Timeout));
                    continue;
                }
                let transport = transport.clone();
                actix_web::rt::spawn(async move {
                    let _ = reply.send(transport.send(&out).await);
                });
            }
        });
    }
    let in_flight: Rc<RefCell<HashMap<String, usize>>> = Rc::default();
    let done = Rc::new(tokio::sync::Notify::new());
    let mut last_gauges = Instant::now() - Duration::from_secs(60);
    loop {
        if last_gauges.elapsed() >= Duration::from_secs(1) {
            last_gauges = Instant::now();
            gauges(&svc).await;
        }
        if let Err(e) = pass(&svc, &transport, &in_flight, &done).await {
            tracing::warn!(error = %e, "relay pass failed");
        }
        tokio::select! {
            () = relay.woken() => {}
            () = done.notified() => {}
            () = tokio::time::sleep(relay.settings.poll) => {}
        }
    }
}

/// Queue depth and the age of the oldest due delivery.
async fn gauges(svc: &Services) {
    let m = svc.relay.metrics.clone();
    let res = blocking(svc, |s| {
        let now = now_ms(s);
        Ok((now, s.store.read(|c| deliveries::backlog(c, now))?))
    })
    .await;
    match res {
        Ok((now, (depth, oldest))) => {
            m.queue_depth.set(depth);
            #[allow(clippy::cast_precision_loss)]
            m.oldest_due_seconds
                .set(oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0));
        }
        Err(e) => tracing::debug!(error = %e, "relay gauges not read"),
    }
}

/// Claims what is due, within each target's free slots, and starts sending.
async fn pass(
    svc: &Services,
    transport: &Rc<dyn Transport>,
    in_flight: &Rc<RefCell<HashMap<String, usize>>>,
    done: &Rc<tokio::sync::Notify>,
) -> DomainResult<()> {
    let settings = &svc.relay.settings;
    let targets = blocking(svc, |s| {
        let now = now_ms(s);
        Ok(s.store
            .read(|c| deliveries::due_targets(c, now, TARGETS_PER_PASS))?)
    })
    .await?;
    for target in targets {
        let busy = in_flight.borrow().get(&target).copied().unwrap_or(0);
        let free = settings.per_target.saturating_sub(busy);
        if free == 0 {
            continue;
        }
        let node = settings.node_id.clone();
        let lease = i64::try_from(settings.lease.as_millis()).unwrap_or(60_000);
        let t = target.clone();
        let claimed = blocking(svc, move |s| {
            let now = now_ms(s);
            let limit = i64::try_from(free).unwrap_or(1);
            Ok(s.store
                .write(|c| deliveries::claim(c, &node, &t, now, now + lease, limit))?)
        })
        .await?;
        for d in claimed {
            *in_flight.borrow_mut().entry(target.clone()).or_default() += 1;
            let (svc, transport, in_flight, done) = (
                svc.clone(),
                transport.clone(),
                in_flight.clone(),
                done.clone(),
            );
            actix_web::rt::spawn(async move {
                deliver(&svc, transport.as_ref(), &d).await;
                if let Some(n) = in_flight.borrow_mut().get_mut(&d.target) {
                    *n = n.saturating_sub(1);
                }
                done.notify_one();
            });
        }
    }
    Ok(())
}

/// Where the target party wants its deliveries, or why there is nowhere.
fn destination(svc: &Services, target: &str) -> DomainResult<Result<String, String>> {
    let p = svc.store.read(|c| parties::get(c, target))?;
    Ok(match p {
        None => Err(format!("no party {target}")),
        Some(p) if p.status == CertStatus::Revoked => Err(format!("party {target} is revoked")),
        Some(p) => p
            .callback_url
            .ok_or_else(|| format!("party {target} has no callback_url")),
    })
}

/// One attempt of one claimed delivery, recorded.
async fn deliver(svc: &Services, transport: &dyn Transport, d: &DeliveryRow) {
    let settings = &svc.relay.settings;
    let target = d.target.clone();
    let attempt = match blocking(svc, move |s| destination(s, &target)).await {
        Err(e) => Attempt::Retryable(format!("cannot read the receiver: {e}")),
        Ok(Err(why)) => Attempt::Refused(why),
        Ok(Ok(url)) => match deliveries::headers_of(d) {
            Err(e) => Attempt::Refused(e.to_string()),
            Ok(headers) => {
                let (method, url) = match d.event {
                    DeliveryEvent::Release => (
                        Method::Delete,
                        format!(
                            "{}/reservations/{}",
                            url.trim_end_matches('/'),
                            d.idempotency_key
                        ),
                    ),
                    _ => (Method::Post, url),
                };
                let out = Outgoing {
                    method,
                    url,
                    event: d.event,
                    idempotency_key: d.idempotency_key.clone(),
                    content_type: d.content_type.clone(),
                    headers,
                    body: zeroize::Zeroizing::new(d.body.clone().into_bytes()),
                    timeout: settings.timeout,
                };
                let sent = tokio::time::timeout(
                    settings.timeout + Duration::from_secs(1),
                    transport.send(&out),
                )
                .await;
                match sent {
                    Err(_) => Attempt::Retryable("no answer within the timeout".into()),
                    Ok(Err(e)) => Attempt::Retryable(e.to_string()),
                    Ok(Ok(a)) if (200..300).contains(&a.status) => Attempt::Delivered {
                        status: a.status,
                        body: a.body,
                    },
                    Ok(Ok(a)) if a.status >= 500 => {
                        Attempt::Retryable(format!("HTTP {}", a.status))
                    }
                    Ok(Ok(a)) => Attempt::Refused(format!("HTTP {}", a.status)),
                }
            }
        },
    };
    let outcome = match &attempt {
        Attempt::Delivered { .. } => "delivered",
        Attempt::Retryable(_) => "retry",
        Attempt::Refused(_) => "refused",
    };
    svc.relay
        .metrics
        .attempts
        .with_label_values(&[&d.target, d.event.as_str(), outcome])
        .inc();
    // Record it; if the database is away, try a few times, then leave the
    // lease to run out (the delivery is sent again: receivers deduplicate).
    let mut wait = Duration::from_millis(200);
    for _ in 0..5 {
        let (d2, a2, node) = (d.clone(), attempt.clone(), settings.node_id.clone());
        let res = blocking(svc, move |s| {
            let now = s.clock.now();
            s.store
                .write(|c| outbox::record(c, &s.relay, &node, &d2, a2, now))
        })
        .await;
        match res {
            Ok(r) => {
                // Follow-up deliveries it enqueued are claimed by the pass
                // that this task's end triggers.
                log_recorded(d, &r, &attempt);
                return;
            }
            Err(e) => {
                tracing::warn!(delivery = %d.id, error = %e, "relay: cannot record an attempt; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    tracing::error!(delivery = %d.id, "relay: attempt not recorded; the lease will run out and it is sent again");
}

fn log_recorded(d: &DeliveryRow, r: &Recorded, attempt: &Attempt) {
    let error = match attempt {
        Attempt::Retryable(e) | Attempt::Refused(e) => e.as_str(),
        Attempt::Delivered { .. } => "",
    };
    match r {
        Recorded::Delivered => {
            tracing::info!(delivery = %d.id, request = %d.request_id, event = %d.event, target = %d.target, attempts = d.attempts, "delivered")
        }
        Recorded::Retry { next_attempt_ms } => {
            tracing::warn!(delivery = %d.id, request = %d.request_id, event = %d.event, target = %d.target, attempts = d.attempts, next_attempt_ms, error, "delivery will be retried")
        }
        Recorded::Failed => {
            tracing::error!(delivery = %d.id, request = %d.request_id, event = %d.event, target = %d.target, attempts = d.attempts, error, "delivery failed")
        }
        Recorded::LeaseLost => {
            tracing::warn!(delivery = %d.id, "another node took this delivery over; its answer counts")
        }
    }
}
