//! Refusals of callers who proved nothing (no or an unknown client
//! certificate, a missing or bad device signature) are not each an audit
//! event: a flood of them would grow the hash chain and slow every writer
//! (issue #8, finding 5). They are counted here per source address and
//! reason, and [`flush`] writes one `auth.refused` event per source per
//! interval with the counts. A refusal of a caller who did authenticate is
//! still its own event.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

use super::{Actor, AuditEvent, NewEvent};
use crate::app::Services;
use crate::clock::rfc3339_seconds;
use crate::error::DomainResult;

/// Sources tracked between two flushes; the rest are counted as `other`.
const MAX_SOURCES: usize = 10_000;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    pub count: u64,
    /// Count per reason (`device signature does not verify`, …).
    pub reasons: BTreeMap<String, u64>,
    /// Count per route pattern.
    pub routes: BTreeMap<String, u64>,
    #[serde(skip)]
    first: Option<OffsetDateTime>,
    #[serde(skip)]
    last: Option<OffsetDateTime>,
}

#[derive(Debug, Default)]
pub struct RefusalLog {
    by_source: Mutex<BTreeMap<String, Tally>>,
}

impl RefusalLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Tally>> {
        self.by_source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one refusal of `source` on `route` for `reason`.
    pub fn note(&self, source: Option<IpAddr>, route: &str, reason: &str, now: OffsetDateTime) {
        let mut m = self.lock();
        let mut key = source.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        if !m.contains_key(&key) && m.len() >= MAX_SOURCES {
            key = "other".into();
        }
        let t = m.entry(key).or_default();
        t.count += 1;
        *t.reasons.entry(reason.to_string()).or_default() += 1;
        *t.routes
            .entry(route.chars().take(80).collect())
            .or_default() += 1;
        t.first.get_or_insert(now);
        t.last = Some(now);
    }

    /// Takes the counts gathered since the last call.
    fn drain(&self) -> BTreeMap<String, Tally> {
        std::mem::take(&mut *self.lock())
    }

    /// Sources counted so far in this interval.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }
}

/// One `auth.refused` event per source counted since the last flush.
/// Returns how many events it wrote.
pub fn flush(svc: &Services) -> DomainResult<usize> {
    let tallies = svc.refusals.drain();
    if tallies.is_empty() {
        return Ok(0);
    }
    let now = svc.clock.now();
    let events: Vec<NewEvent> = tallies
        .into_iter()
        .map(|(source, t)| {
            NewEvent::of(
                &Actor::Anonymous,
                format!("source:{source}"),
                AuditEvent::AuthRefused {
                    source,
                    count: t.count,
                    first: t.first.map(rfc3339_seconds).unwrap_or_default(),
                    last: t.last.map(rfc3339_seconds).unwrap_or_default(),
                    reasons: t.reasons,
                    routes: t.routes,
                },
            )
        })
        .collect();
    let n = events.len();
    svc.store.write(|c| super::append_all(c, now, events))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_source_and_reason() {
        let log = RefusalLog::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            log.note(Some(a), "/v1/handset/requests", "bad signature", now);
        }
        log.note(None, "/v1/admin/subscribers", "no client certificate", now);
        let d = log.drain();
        assert_eq!(d.len(), 2);
        assert_eq!(d["192.0.2.1"].count, 3);
        assert_eq!(d["192.0.2.1"].reasons["bad signature"], 3);
        assert_eq!(d["unknown"].routes["/v1/admin/subscribers"], 1);
        assert_eq!(log.pending(), 0);
    }
}
