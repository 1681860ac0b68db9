//! The key-encryption keys and the operator commands over wrapped
//! subscriber keys (`docs/hsm.md`, "Wrapped keys"):
//!
//! * [`create_kek`]: a new trusted KEK version, made in an SO session and
//!   recorded (by `tmcs init`, and by `tmcs hsm rewrap` to rotate);
//! * [`rewrap`]: every key under an older version wrapped again under the
//!   newest, in batches, resumable, audited per batch;
//! * [`migrate_keys`]: token keys replaced by wrapped ones.
//!
//! PKCS#11 keeps one login state per application: an SO session cannot be
//! opened while the process is logged in as the user, so KEKs are created
//! before the process opens its HSM pool.

use std::path::Path;

use secrecy::SecretString;

use crate::app::{AppError, Services};
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::DomainError;
use crate::hsm::{self, KeyId};
use crate::store::wrapped::{self, KekRow};
use crate::store::{subscribers, Store};

/// The SO PIN, read from `hsm.so_pin_file` (SoftHSM2: `so.pin` beside its
/// config, written by `tmcs init`).
pub fn so_pin(cfg: &Config) -> Result<SecretString, AppError> {
    let path = cfg.hsm_so_pin_file.as_deref().ok_or_else(|| {
        AppError::Setup(
            "creating a key-encryption key needs the token's SO PIN: set hsm.so_pin_file".into(),
        )
    })?;
    read_so_pin(path)
}

fn read_so_pin(path: &Path) -> Result<SecretString, AppError> {
    crate::fsutil::read_secret_file(path)
        .map_err(|e| AppError::Setup(format!("SO PIN file {}: {e}", path.display())))
}

/// Creates the next KEK version in the token (an SO session) and records
/// it, audited. Call before this process logs in as the user.
pub fn create_kek(
    cfg: &Config,
    store: &Store,
    clock: &dyn Clock,
    so_pin: &SecretString,
) -> Result<KekRow, AppError> {
    let version = store
        .read(wrapped::current_kek)?
        .map_or(1, |k| k.version + 1);
    let id = hsm::create_trusted_kek(
        &cfg.file.hsm.module,
        cfg.softhsm_conf.as_deref(),
        &cfg.file.hsm.token_label,
        so_pin,
        &format!("tmcs:kek-v{version}"),
    )?;
    let now = clock.now();
    let row = KekRow {
        version,
        key_id: id.to_hex(),
        created_at: now.unix_timestamp(),
    };
    let event = NewEvent::of(
        &Actor::System,
        format!("kek:v{version}"),
        AuditEvent::KekCreated {
            version,
            key_id: id.to_hex(),
            token: cfg.file.hsm.token_label.clone(),
            trusted: true,
            extractable: false,
        },
    );
    store.write(|c| -> Result<(), AppError> {
        wrapped::insert_kek(c, &row)?;
        audit::append(c, now, event)?;
        Ok(())
    })?;
    Ok(row)
}

/// What a rotation did.
#[derive(Debug, Default)]
pub struct Rewrapped {
    pub version: i32,
    pub keys: u64,
    pub batches: u64,
}

/// Whether some key is still wrapped under a version older than the newest
/// (an unfinished rotation, which `tmcs hsm rewrap` resumes).
pub fn rotation_pending(store: &Store) -> Result<bool, AppError> {
    store.read(|c| -> Result<bool, AppError> {
        let Some(cur) = wrapped::current_kek(c)? else {
            return Ok(false);
        };
        Ok(!wrapped::older_than(c, cur.version, "", 1)?.is_empty())
    })
}

/// Wraps every key under an older KEK version again under the newest, in
/// batches of `batch`; each batch is one transaction with its audit event.
/// A row that changed meanwhile (renewed, disconnected) is left alone.
/// Running it again after an interruption carries on where it stopped.
pub fn rewrap(svc: &Services, batch: usize) -> Result<Rewrapped, DomainError> {
    let batch = i64::try_from(batch.clamp(1, 10_000)).unwrap_or(500);
    let (target, target_kek) = svc.store.read(|c| -> Result<(i32, KeyId), DomainError> {
        let k = wrapped::current_kek(c)?.ok_or_else(|| {
            crate::error::internal("no key-encryption key is recorded: run `tmcs init`")
        })?;
        Ok((k.version, KeyId::from_hex(&k.key_id)?))
    })?;
    let keks: std::collections::HashMap<i32, KeyId> = svc
        .store
        .read(wrapped::all_keks)?
        .into_iter()
        .map(|k| KeyId::from_hex(&k.key_id).map(|id| (k.version, id)))
        .collect::<Result<_, _>>()?;
    let mut done = Rewrapped {
        version: target,
        ..Rewrapped::default()
    };
    let mut cursor = String::new();
    loop {
        let rows = svc
            .store
            .read(|c| wrapped::older_than(c, target, &cursor, batch))?;
        let Some(last) = rows.last() else { break };
        cursor = last.key_id.clone();
        let mut fresh = Vec::with_capacity(rows.len());
        for row in &rows {
            let from = keks.get(&row.kek_version).ok_or_else(|| {
                crate::error::internal(format!(
                    "key {} is under KEK version {} which is not recorded",
                    row.key_id, row.kek_version
                ))
            })?;
            let blob = hex::decode(&row.wrapped).map_err(|_| {
                crate::error::internal(format!("key {}: stored blob is not hex", row.key_id))
            })?;
            let again = svc.custody.rewrap(from, &target_kek, &blob)?;
            fresh.push((row.key_id.clone(), row.kek_version, hex::encode(again)));
        }
        let now = svc.clock.now();
        let n = svc.store.write(|c| -> Result<usize, DomainError> {
            let mut n = 0;
            for (key_id, from, blob) in &fresh {
                if wrapped::rewrapped(c, key_id, *from, target, blob, now.unix_timestamp())? {
                    n += 1;
                }
            }
            audit::append(
                c,
                now,
                NewEvent::of(
                    &Actor::System,
                    format!("kek:v{target}"),
                    AuditEvent::KeysRewrapped {
                        to_version: target,
                        keys: n,
                        first_key: fresh.first().map(|f| f.0.clone()).unwrap_or_default(),
                        last_key: cursor.clone(),
                    },
                ),
            )?;
            Ok(n)
        })?;
        done.keys += n as u64;
        done.batches += 1;
    }
    let now = svc.clock.now();
    svc.store.write(|c| -> Result<(), DomainError> {
        // Keys renewed under an old version after the cursor passed them
        // cannot exist (new keys take the newest version), so this holds.
        if !wrapped::older_than(c, target, "", 1)?.is_empty() {
            return Err(crate::error::internal(
                "keys under an older KEK remain; run `tmcs hsm rewrap` again",
            ));
        }
        audit::append(
            c,
            now,
            NewEvent::of(
                &Actor::System,
                format!("kek:v{target}"),
                AuditEvent::KekRotated {
                    version: target,
                    keys_rewrapped: done.keys,
                },
            ),
        )?;
        Ok(())
    })?;
    Ok(done)
}

/// What a migration did.
#[derive(Debug, Default)]
pub struct Migrated {
    pub migrated: u64,
    /// Token keys of subscribers that are not active (blocked, suspended):
    /// they keep working and are migrated by a later run.
    pub skipped: u64,
}

/// Moves token keys to wrapped storage. A token key was generated never
/// extractable, so no HSM can wrap it: each is *replaced* by a new wrapped
/// key with a renewed certificate (the old one revoked as superseded and
/// its token object destroyed), as `POST …/renew` does, audited as
/// `hsm.key_migrated`.
pub fn migrate_keys(svc: &Services, batch: usize) -> Result<Migrated, DomainError> {
    let batch = i64::try_from(batch.clamp(1, 10_000)).unwrap_or(500);
    let mut done = Migrated::default();
    let mut cursor = String::new();
    loop {
        let rows = svc
            .store
            .read(|c| subscribers::with_keys_after(c, &cursor, batch))?;
        let Some(last) = rows.last() else { break };
        cursor = last.id.clone();
        for s in rows {
            let Some(key) = s.key_id.as_deref() else {
                continue;
            };
            if svc.store.read(|c| wrapped::get(c, key))?.is_some() {
                continue;
            }
            match crate::subscriber::renewal::migrate(svc, &s.msisdn, key) {
                Ok(true) => done.migrated += 1,
                Ok(false) => done.skipped += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(done)
}
