//! Per-client limits at the edge (issue #8, findings 4 and 5):
//!
//! * open connections per client address (`server.max_connections_per_ip`):
//!   a connection beyond the cap gets `429 rate.limited` and is closed;
//! * refused requests per client address (`server.refusals_per_second`,
//!   `server.refusal_burst`, a GCRA limiter from `governor`): once a source
//!   has used its allowance of refusals, everything it sends is answered
//!   `429` with `Retry-After` until the allowance refills, without touching
//!   the database, the HSM or the audit log.
//!
//! The address is the TCP peer (put a proxy that keeps it in front, or bind
//! tmcs to the address clients reach).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::{ApiError, State};
use crate::config::ServerSection;
use crate::problem::Problem;

/// Open connections per address.
#[derive(Debug, Default)]
struct Connections {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_ip.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Held in a connection's extensions: counts the connection while it is open.
struct ConnectionSlot {
    ip: IpAddr,
    open: Arc<Connections>,
    /// This connection's rank among the address's open connections.
    rank: usize,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut m = self.open.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

pub struct ClientLimits {
    per_ip: usize,
    open: Arc<Connections>,
    refusals: DefaultKeyedRateLimiter<IpAddr>,
    /// Sources out of allowance, until when (bounded).
    limited: quick_cache::sync::Cache<IpAddr, Instant>,
    refused: IntCounterVec,
    throttled: IntCounterVec,
    tracked: IntGauge,
}

impl ClientLimits {
    pub fn new(
        cfg: &ServerSection,
        registry: &Registry,
    ) -> Result<ClientLimits, prometheus::Error> {
        let per_second = NonZeroU32::new(cfg.refusals_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(cfg.refusal_burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let refused = IntCounterVec::new(
            Opts::new(
                "tmcs_http_refused_total",
                "Refused requests (4xx other than 409 and 429), by status",
            ),
            &["status"],
        )?;
        let throttled = IntCounterVec::new(
            Opts::new(
                "tmcs_http_throttled_total",
                "Requests answered 429 by the per-client limits, by cause",
            ),
            &["cause"],
        )?;
        let tracked = IntGauge::new(
            "tmcs_http_limited_sources",
            "Client addresses currently out of refusal allowance",
        )?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        registry.register(Box::new(tracked.clone()))?;
        Ok(ClientLimits {
            per_ip: cfg.max_connections_per_ip.max(1),
            open: Arc::new(Connections::default()),
            refusals: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            limited: quick_cache::sync::Cache::new(100_000),
            refused,
            throttled,
            tracked,
        })
    }

    /// The `on_connect` hook: counts the connection for its address.
    pub fn on_connect(&self, peer: Option<IpAddr>, ext: &mut Extensions) {
        let Some(ip) = peer else {
            return;
        };
        let rank = {
            let mut m = self.open.lock();
            let n = m.entry(ip).or_insert(0);
            *n += 1;
            *n
        };
        ext.insert(ConnectionSlot {
            ip,
            open: self.open.clone(),
            rank,
        });
    }

    /// Open connections of `ip` now.
    pub fn open_connections(&self, ip: IpAddr) -> usize {
        self.open.lock().get(&ip).copied().unwrap_or(0)
    }

    fn limited_for(&self, ip: IpAddr) -> Option<Duration> {
        let until = self.limited.get(&ip)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            self.limited.remove(&ip);
            None
        }
    }

    /// Counts a refusal of `ip`; returns whether it is now out of allowance.
    fn count_refusal(&self, ip: IpAddr, status: u16) {
        self.refused.with_label_values(&[&status.to_string()]).inc();
        if let Err(not_until) = self.refusals.check_key(&ip) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.limited.insert(ip, Instant::now() + wait);
        }
        self.tracked
            .set(i64::try_from(self.limited.len()).unwrap_or(i64::MAX));
    }

    /// Forgets limiter state of sources that are quiet again (bounded memory).
    pub fn prune(&self) {
        self.refusals.retain_recent();
        self.refusals.shrink_to_fit();
    }
}

/// A status the refusal allowance counts: bad credentials or bad input.
fn is_refusal(status: u16) -> bool {
    matches!(status, 400 | 401 | 403 | 404 | 405 | 408 | 413 | 415 | 422)
}

fn too_many(retry_after: Duration, detail: &str) -> ApiError {
    let mut e = ApiError::coded(Problem::TooManyRequests, detail.to_string());
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    e.retry_after = Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX));
    e
}

/// Middleware: the per-address limits, before any other work.
pub async fn gate<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let state = req.app_data::<web::Data<State>>().cloned();
    let ip = req.peer_addr().map(|a| a.ip());
    let (Some(state), Some(ip)) = (state, ip) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let limits = &state.clients;
    let rank = req.conn_data::<ConnectionSlot>().map(|s| s.rank);
    if rank.is_some_and(|r| r > limits.per_ip) {
        limits.throttled.with_label_values(&["connections"]).inc();
        let e = too_many(
            Duration::from_secs(1),
            "too many open connections from this address",
        );
        let mut res = req.error_response(e);
        res.response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        return Ok(res.map_into_right_body());
    }
    if let Some(wait) = limits.limited_for(ip) {
        limits.throttled.with_label_values(&["refusals"]).inc();
        let e = too_many(
            wait,
            "too many refused requests from this address; slow down",
        );
        return Ok(req.error_response(e).map_into_right_body());
    }
    let res = next.call(req).await?;
    let status = res.status().as_u16();
    if is_refusal(status) {
        limits.count_refusal(ip, status);
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_beyond_the_burst_limit_the_source() {
        let cfg = ServerSection {
            refusals_per_second: 1,
            refusal_burst: 3,
            ..ServerSection::default()
        };
        let l = ClientLimits::new(&cfg, &Registry::new()).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            l.count_refusal(a, 401);
            assert!(l.limited_for(a).is_none());
        }
        l.count_refusal(a, 401);
        let wait = l.limited_for(a).expect("limited after the burst");
        assert!(wait <= Duration::from_secs(1));
        assert!(l.limited_for(b).is_none(), "another source is not affected");
    }

    #[test]
    fn connections_are_counted_until_dropped() {
        let l = ClientLimits::new(&ServerSection::default(), &Registry::new()).unwrap();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let mut exts: Vec<Extensions> = (0..3).map(|_| Extensions::new()).collect();
        for e in &mut exts {
            l.on_connect(Some(ip), e);
        }
        assert_eq!(l.open_connections(ip), 3);
        exts.truncate(1);
        assert_eq!(l.open_connections(ip), 1);
        drop(exts);
        assert_eq!(l.open_connections(ip), 0);
    }
}
