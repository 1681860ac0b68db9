//! HMAC-SHA256 with a token-resident generic secret.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;

use super::{Hsm, HsmError, KeyId};

impl Hsm {
    pub fn hmac_sha256(&self, key: &KeyId, data: &[u8]) -> Result<[u8; 32], HsmError> {
        let mac = self.pool.run("hmac_sha256", |lease| {
            let h = lease.handle(key, ObjectClass::SECRET_KEY)?;
            Ok(lease.session()?.sign(&Mechanism::Sha256Hmac, h, data)?)
        })?;
        <[u8; 32]>::try_from(mac.as_slice())
            .map_err(|_| HsmError::Unexpected(format!("HMAC of {} bytes", mac.len())))
    }
}
