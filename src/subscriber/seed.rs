//! Bulk provisioning for the population benchmark (`tmcs bench
//! --population N`): active subscribers with real keys (as
//! `hsm.key_storage` says, wrapped by default) and real certificates,
//! recorded as an activation records them, in one transaction per batch.
//!
//! Not reachable through the API or any operator command: a real
//! subscriber is bound to a handset by the one-time activation code.
//! Seeded subscribers share one PIN salt so that seeding does not run
//! argon2 once per subscriber; every authorisation still runs it.

use crate::app::Services;
use crate::audit::{self, Actor};
use crate::error::{internal, DomainResult};
use crate::states::SubscriberState;
use crate::store::subscribers::{self, SubscriberRow};

use super::renewal::{new_key_and_cert, record_new_cert};

/// One subscriber to seed: its number and its handset's device key
/// (base64 SPKI DER).
#[derive(Debug, Clone)]
pub struct Seed {
    pub msisdn: String,
    pub device_spki_b64: String,
}

/// The PIN every seeded subscriber gets, hashed once: salt and verifier.
pub struct SeedPin {
    salt: Vec<u8>,
    verifier: [u8; 32],
}

impl std::fmt::Debug for SeedPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeedPin([redacted])")
    }
}

impl SeedPin {
    pub fn new(svc: &Services, pin: &str) -> DomainResult<SeedPin> {
        let mut salt = vec![0u8; 16];
        openssl::rand::rand_bytes(&mut salt).map_err(|e| internal(e.to_string()))?;
        let verifier = svc.pins.verifier(svc.custody.as_ref(), &salt, pin)?;
        Ok(SeedPin { salt, verifier })
    }
}

/// Seeds `batch` as active subscribers with keys and certificates. The HSM
/// and CA work happens first; then one transaction writes the rows and
/// their audit events (key generated, certificate issued and activated).
pub fn seed_batch(svc: &Services, pin: &SeedPin, batch: &[Seed]) -> DomainResult<()> {
    let now = svc.clock.now();
    let t = now.unix_timestamp();
    let rows: Vec<SubscriberRow> = batch
        .iter()
        .map(|s| SubscriberRow {
            id: uuid::Uuid::new_v4().to_string(),
            msisdn: s.msisdn.clone(),
            pseudonym: format!("sub-{}", &uuid::Uuid::new_v4().simple().to_string()[..20]),
            display_name: "Seeded payer".into(),
            kyc_ref: "SEED".into(),
            state: SubscriberState::Active,
            activation_hash: None,
            activation_expires_at: None,
            attempts: 0,
            pin_salt: Some(hex::encode(&pin.salt)),
            pin_verifier: Some(hex::encode(pin.verifier)),
            device_spki: Some(s.device_spki_b64.clone()),
            key_id: None,
            cert_serial: None,
            created_at: t,
            updated_at: t,
            alias: None,
        })
        .collect();
    let made = svc.store.read(|c| {
        rows.iter()
            .map(|r| new_key_and_cert(svc, c, r, now))
            .collect::<DomainResult<Vec<_>>>()
    })?;
    let result = svc.store.write(|c| -> DomainResult<()> {
        let mut events = Vec::with_capacity(rows.len() * 3);
        for (row, (key, cert)) in rows.iter().zip(&made) {
            let mut row = row.clone();
            row.key_id = Some(key.id().to_hex());
            row.cert_serial = Some(cert.serial_hex.clone());
            subscribers::insert(c, &row)?;
            events.extend(record_new_cert(c, &Actor::System, &row, key, cert, now)?);
        }
        audit::append_all(c, now, events)?;
        Ok(())
    });
    if result.is_err() {
        for (key, _) in &made {
            super::keys::discard(svc, key);
        }
    }
    result
}
