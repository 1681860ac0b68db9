//! The periodic sweep while serving: requests past their expiry and
//! certificates past their notAfter become `expired` (each with its event),
//! and device signatures whose replay window has passed are forgotten.

use crate::app::Services;
use crate::error::DomainResult;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub requests: usize,
    pub certificates: usize,
    pub device_signatures: usize,
}

pub fn sweep(svc: &Services) -> DomainResult<Swept> {
    let requests = crate::signing::expire_overdue(svc)?;
    let certificates = crate::pki::lifecycle::expire_certificates(svc)?;
    let now = svc.clock.now().unix_timestamp();
    let device_signatures = svc.store.write(|c| crate::store::replay::purge(c, now))?;
    Ok(Swept {
        requests,
        certificates,
        device_signatures,
    })
}
