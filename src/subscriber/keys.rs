//! A subscriber's private key: where it lives (`hsm.key_storage`) and how
//! it signs. With `wrapped` (the default) the key is a blob in
//! `wrapped_keys`, wrapped under the newest KEK, and exists in the HSM only
//! for the instant of a signature; with `token` it is a token object found
//! by `CKA_ID`. Keys made before a switch keep working either way: the
//! signer looks the key up in `wrapped_keys` first.

use crate::app::Services;
use crate::config::KeyStorage;
use crate::error::{internal, DomainResult};
use crate::hsm::{EcUsage, GeneratedKey, HsmError, KeyId};
use crate::store::wrapped::{self, WrappedRow};
use crate::store::DbConn;

/// How to sign with a subscriber's key.
pub enum SignerKey {
    Token(KeyId),
    Wrapped {
        kek: KeyId,
        kek_version: i32,
        blob: Vec<u8>,
    },
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignerKey::Token(id) => f.debug_tuple("Token").field(id).finish(),
            SignerKey::Wrapped { kek_version, .. } => f
                .debug_struct("Wrapped")
                .field("kek_version", kek_version)
                .finish_non_exhaustive(),
        }
    }
}

/// A key just made, not yet recorded.
pub struct NewKey {
    pub key: GeneratedKey,
    /// The KEK version and the wrapped key (`wrapped` storage).
    wrapped: Option<(i32, Vec<u8>)>,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.key.id)
            .field("kek_version", &self.kek_version())
            .finish_non_exhaustive()
    }
}

impl NewKey {
    pub fn id(&self) -> &KeyId {
        &self.key.id
    }
    pub fn storage(&self) -> KeyStorage {
        if self.wrapped.is_some() {
            KeyStorage::Wrapped
        } else {
            KeyStorage::Token
        }
    }
    pub fn kek_version(&self) -> Option<i32> {
        self.wrapped.as_ref().map(|(v, _)| *v)
    }
}

/// The KEK new keys are wrapped under, or an error naming the fix.
pub fn current_kek(conn: &mut DbConn) -> DomainResult<(i32, KeyId)> {
    let row = wrapped::current_kek(conn)?.ok_or_else(|| {
        internal(
            "hsm.key_storage is \"wrapped\" but there is no key-encryption key: run `tmcs init`",
        )
    })?;
    Ok((row.version, KeyId::from_hex(&row.key_id)?))
}

/// A new signing key as `hsm.key_storage` says.
pub fn generate(svc: &Services, conn: &mut DbConn) -> DomainResult<NewKey> {
    match svc.key_storage {
        KeyStorage::Token => Ok(NewKey {
            key: svc
                .custody
                .generate_ec_p256("tmcs:subscriber", EcUsage::Sign)?,
            wrapped: None,
        }),
        KeyStorage::Wrapped => {
            let (version, kek) = current_kek(conn)?;
            let (key, blob) = svc.custody.generate_wrapped_p256(&kek)?;
            Ok(NewKey {
                key,
                wrapped: Some((version, blob)),
            })
        }
    }
}

/// Records a new key in the caller's transaction (a wrapped key's blob).
pub fn record(conn: &mut DbConn, key: &NewKey, now: i64) -> DomainResult<()> {
    if let Some((version, blob)) = &key.wrapped {
        wrapped::insert(
            conn,
            &WrappedRow {
                key_id: key.key.id.to_hex(),
                kek_version: *version,
                wrapped: hex::encode(blob),
                created_at: now,
                updated_at: now,
            },
        )?;
    }
    Ok(())
}

/// Undoes [`generate`] when the key was never recorded.
pub fn discard(svc: &Services, key: &NewKey) {
    if key.wrapped.is_none() {
        let _ = svc.custody.destroy_key(&key.key.id);
    }
}

/// The key recorded as `key_hex`, ready to sign.
pub fn load(conn: &mut DbConn, key_hex: &str) -> DomainResult<SignerKey> {
    let id = KeyId::from_hex(key_hex)?;
    // The foreign key keeps every wrapped key's KEK version recorded.
    let Some((row, kek_id)) = wrapped::get_with_kek(conn, key_hex)? else {
        return Ok(SignerKey::Token(id));
    };
    let blob = hex::decode(&row.wrapped)
        .map_err(|_| internal(format!("key {key_hex}: the stored wrapped key is not hex")))?;
    Ok(SignerKey::Wrapped {
        kek: KeyId::from_hex(&kek_id)?,
        kek_version: row.kek_version,
        blob,
    })
}

/// ECDSA P-256 over `digest`, DER encoded.
pub fn sign(svc: &Services, key: &SignerKey, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
    match key {
        SignerKey::Token(id) => svc.custody.sign_digest(id, digest),
        SignerKey::Wrapped { kek, blob, .. } => svc.custody.sign_wrapped(kek, blob, digest),
    }
}

/// Destroys a retired key (after the transaction that retired it): a token
/// object is destroyed, a wrapped key's blob deleted. A failure is logged:
/// the key can no longer be used, since its certificate is revoked and no
/// subscriber names it.
pub fn destroy_best_effort(svc: &Services, key_hex: &str) {
    match svc.store.write(|c| wrapped::delete(c, key_hex)) {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not delete a retired wrapped subscriber key");
            return;
        }
    }
    match KeyId::from_hex(key_hex) {
        Ok(id) => {
            if let Err(e) = svc.custody.destroy_key(&id) {
                tracing::warn!(key = %id, error = %e, "could not destroy a retired subscriber key");
            }
        }
        Err(e) => tracing::warn!(error = %e, "bad stored key id"),
    }
}
