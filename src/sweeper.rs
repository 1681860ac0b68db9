//! The periodic sweep while serving: requests past their expiry and
//! certificates past their notAfter become `expired` (each with its event),
//! device signatures whose replay window has passed are forgotten, and
//! instruments whose amount was not confirmed in time expire (their
//! reservations released).

use crate::app::Services;
use crate::error::DomainResult;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub requests: usize,
    pub certificates: usize,
    pub device_signatures: usize,
    /// Instruments expired or given up (their reservations released).
    pub instruments: usize,
}

pub fn sweep(svc: &Services) -> DomainResult<Swept> {
    let requests = crate::signing::expire_overdue(svc)?;
    let certificates = crate::pki::lifecycle::expire_certificates(svc)?;
    let now = svc.clock.now().unix_timestamp();
    let device_signatures = svc.store.write(|c| crate::store::replay::purge(c, now))?;
    let instruments = crate::relay::instruments::sweep(svc)?;
    Ok(Swept {
        requests,
        certificates,
        device_signatures,
        instruments,
    })
}
