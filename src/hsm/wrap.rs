//! Wrapped subscriber keys (`hsm.key_storage = "wrapped"`): a subscriber's
//! private key exists in the token only as a short-lived *session* object.
//! At rest it is a blob wrapped (`CKM_AES_KEY_WRAP_PAD`) under an AES-256
//! key-encryption key (KEK) that never leaves the token; the database keeps
//! the blob. Signing unwraps it into a non-extractable session object,
//! signs and destroys it, so the cost stays flat with the population and
//! the token holds a handful of objects, not one per subscriber.
//!
//! * The KEK is created by the security officer: `CKA_TRUSTED` can only be
//!   set in an SO session ([`create_trusted_kek`]), wrap and unwrap only,
//!   sensitive and never extractable.
//! * A subscriber key is generated `CKA_SENSITIVE`, `CKA_EXTRACTABLE` only
//!   so that it can be wrapped, and `CKA_WRAP_WITH_TRUSTED`: the token
//!   refuses to wrap it under any key that is not trusted, and never hands
//!   out its value.

use std::path::Path;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use secrecy::SecretString;

use super::pool::{find_slot, Lease};
use super::{
    context, spki_from_point, unwrap_ec_point, GeneratedKey, Hsm, HsmError, KeyId, P256_OID_DER,
};

/// Creates a trusted AES-256 KEK as a token object in an SO session and
/// returns its id. Must run before this process logs in as the user (the
/// token has one login state per application), as `tmcs init` and
/// `tmcs hsm rewrap` do.
///
/// PKCS#11 lets the SO create public objects only, so the KEK is
/// `CKA_PRIVATE=false`: any session of this application can *use* it to
/// wrap or unwrap, none can read it (see `docs/hsm.md` for what that means
/// on SoftHSM2 and on a network HSM).
pub fn create_trusted_kek(
    module: &str,
    softhsm_conf: Option<&Path>,
    token_label: &str,
    so_pin: &SecretString,
    label: &str,
) -> Result<KeyId, HsmError> {
    let ctx = context::context(module, softhsm_conf)?;
    let slot = find_slot(&ctx, token_label)?;
    let session = ctx.open_rw_session(slot)?;
    session.login(UserType::So, Some(so_pin))?;
    let id = KeyId::random()?;
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Trusted(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Id(id.as_bytes().to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let made = session.generate_key(&Mechanism::AesKeyGen, &template);
    let _ = session.logout();
    made?;
    Ok(id)
}

/// The template of an unwrapped subscriber key: a session object, private
/// and sensitive. One that signs is not extractable; one on its way to
/// another KEK cannot sign and can only be wrapped under a trusted key.
fn unwrapped_template(to_sign: bool) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(!to_sign),
        Attribute::Sign(to_sign),
        Attribute::Derive(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
    ];
    if !to_sign {
        t.push(Attribute::WrapWithTrusted(true));
    }
    t
}

fn signing_template() -> Vec<Attribute> {
    unwrapped_template(true)
}

fn rewrap_template() -> Vec<Attribute> {
    unwrapped_template(false)
}

/// Destroys the session objects it holds when it goes out of scope, even
/// when the operation in between failed.
struct Scratch<'a> {
    session: &'a Session,
    objects: Vec<ObjectHandle>,
}

impl<'a> Scratch<'a> {
    fn new(lease: &'a Lease<'_>) -> Result<Scratch<'a>, HsmError> {
        Ok(Scratch {
            session: lease.session()?,
            objects: Vec::new(),
        })
    }
    fn keep(&mut self, h: ObjectHandle) -> ObjectHandle {
        self.objects.push(h);
        h
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        for h in self.objects.drain(..) {
            if let Err(e) = self.session.destroy_object(h) {
                // A session object dies with its session anyway.
                tracing::warn!(error = %e, "could not destroy a session key object");
            }
        }
    }
}

impl Hsm {
    /// A new P-256 signing key pair, made as session objects and returned
    /// wrapped under `kek`; nothing of it stays in the token.
    pub fn generate_wrapped_p256(&self, kek: &KeyId) -> Result<(GeneratedKey, Vec<u8>), HsmError> {
        let id = KeyId::random()?;
        let public = [
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Derive(false),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::EcParams(P256_OID_DER.to_vec()),
        ];
        let private = [
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::WrapWithTrusted(true),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
        ];
        let (point, blob) = self.pool.run("ec_generate_wrapped", |lease| {
            let kek_h = lease.handle(kek, ObjectClass::SECRET_KEY)?;
            let mut scratch = Scratch::new(lease)?;
            let (pub_h, priv_h) =
                scratch
                    .session
                    .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)?;
            scratch.keep(pub_h);
            scratch.keep(priv_h);
            let mut point = None;
            for a in scratch
                .session
                .get_attributes(pub_h, &[AttributeType::EcPoint])?
            {
                if let Attribute::EcPoint(p) = a {
                    point = Some(unwrap_ec_point(&p)?);
                }
            }
            let point = point
                .ok_or_else(|| HsmError::Unexpected("generated key has no CKA_EC_POINT".into()))?;
            let blob = scratch
                .session
                .wrap_key(&Mechanism::AesKeyWrapPad, kek_h, priv_h)?;
            Ok((point, blob))
        })?;
        Ok((
            GeneratedKey {
                spki: spki_from_point(&point),
                point,
                id,
            },
            blob,
        ))
    }

    /// ECDSA P-256 over `digest` with the key wrapped in `blob` under `kek`:
    /// unwrap into a session object, sign, destroy. DER encoded.
    pub fn sign_wrapped(
        &self,
        kek: &KeyId,
        blob: &[u8],
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, HsmError> {
        let raw = self.pool.run("ecdsa_sign_wrapped", |lease| {
            let kek_h = lease.handle(kek, ObjectClass::SECRET_KEY)?;
            let mut scratch = Scratch::new(lease)?;
            let h = scratch.session.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                kek_h,
                blob,
                &signing_template(),
            )?;
            let h = scratch.keep(h);
            Ok(scratch.session.sign(&Mechanism::Ecdsa, h, digest)?)
        })?;
        super::sign::raw_to_der(&raw)
    }

    /// The key wrapped in `blob` under `from`, wrapped under `to` instead.
    /// The key exists in clear only inside the token, as a session object
    /// that cannot sign and is destroyed at once.
    pub fn rewrap(&self, from: &KeyId, to: &KeyId, blob: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.pool.run("rewrap", |lease| {
            let from_h = lease.handle(from, ObjectClass::SECRET_KEY)?;
            let to_h = lease.handle(to, ObjectClass::SECRET_KEY)?;
            let mut scratch = Scratch::new(lease)?;
            let h = scratch.session.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                from_h,
                blob,
                &rewrap_template(),
            )?;
            let h = scratch.keep(h);
            Ok(scratch
                .session
                .wrap_key(&Mechanism::AesKeyWrapPad, to_h, h)?)
        })
    }

    /// Whether the secret key `id` is marked `CKA_TRUSTED`.
    pub fn is_trusted(&self, id: &KeyId) -> Result<bool, HsmError> {
        self.pool.run("attributes", |lease| {
            let h = lease.handle(id, ObjectClass::SECRET_KEY)?;
            for a in lease
                .session()?
                .get_attributes(h, &[AttributeType::Trusted])?
            {
                if let Attribute::Trusted(v) = a {
                    return Ok(v);
                }
            }
            Ok(false)
        })
    }

    /// Test support: what the token allows with a wrapped subscriber key,
    /// unwrapped with the most permissive template tmcs ever uses (the
    /// rewrap one). Tries to wrap it under a fresh *untrusted* AES key, and
    /// to read its value in clear.
    #[doc(hidden)]
    pub fn export_probe(&self, kek: &KeyId, blob: &[u8]) -> Result<ExportProbe, HsmError> {
        self.pool.run("export_probe", |lease| {
            let kek_h = lease.handle(kek, ObjectClass::SECRET_KEY)?;
            let mut scratch = Scratch::new(lease)?;
            let untrusted = scratch.session.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                ],
            )?;
            scratch.keep(untrusted);
            let h = scratch.session.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                kek_h,
                blob,
                &rewrap_template(),
            )?;
            let h = scratch.keep(h);
            let untrusted_wrap = scratch
                .session
                .wrap_key(&Mechanism::AesKeyWrapPad, untrusted, h)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"));
            let clear_value = scratch
                .session
                .get_attributes(h, &[AttributeType::Value])
                .ok()
                .and_then(|attrs| {
                    attrs.into_iter().find_map(|a| match a {
                        Attribute::Value(v) => Some(v.len()),
                        _ => None,
                    })
                });
            Ok(ExportProbe {
                untrusted_wrap,
                clear_value_len: clear_value,
            })
        })
    }
}

/// What [`Hsm::export_probe`] found.
#[derive(Debug)]
pub struct ExportProbe {
    /// The token's answer to wrapping the key under an untrusted key (the
    /// PKCS#11 error as `Pkcs11(<return value>, <function>)`).
    pub untrusted_wrap: Result<(), String>,
    /// The length of `CKA_VALUE` if the token handed it out (it must not).
    pub clear_value_len: Option<usize>,
}
