//! Issuance (the CA side): the root and issuing CA whose keys live in the
//! HSM, certificate profiles, and the registry of everything issued.
//! Custody of the keys is `crate::hsm`'s job; this module only asks it to sign.

pub mod cert;
pub mod crl;
pub mod issue;
pub mod lifecycle;
pub mod ocsp;
pub mod profile;
pub mod reason;
pub mod signer;

use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use rcgen::{Issuer, PublicKeyData};
use time::OffsetDateTime;

use crate::hsm::{point_from_spki, Custody, HsmError, KeyId};
use crate::store::{certs, keys, DbConn, Store, StoreError};

pub use cert::CertInfo;
pub use issue::{CertSpec, Subject};
pub use profile::{Profile, Profiles};
pub use reason::Reason;
pub use signer::{EcPublicKey, HsmSigner};

/// Whether `sig` (DER ECDSA, or RSA PKCS#1 v1.5) is `key`'s SHA-256
/// signature over `msg`. Every signature check of the service goes through
/// here: parties' and devices' signatures, checkpoints, tree heads,
/// evidence.
pub fn sha256_signature_verifies(
    key: &openssl::pkey::PKeyRef<Public>,
    msg: &[u8],
    sig: &[u8],
) -> bool {
    openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), key)
        .and_then(|mut v| v.verify_oneshot(sig, msg))
        .unwrap_or(false)
}

/// Names of the server's HSM keys (table `server_keys`) and of the current
/// server certificates (table `pki_current`).
pub mod names {
    pub const ROOT_CA: &str = "root-ca";
    pub const ISSUING_CA: &str = "issuing-ca";
    pub const TRANSPORT: &str = "transport";
    pub const DISPLAY: &str = "display";
    pub const AUDIT: &str = "audit";
    pub const OCSP: &str = "ocsp";
    pub const PIN_PEPPER: &str = "pin-pepper";
    pub const TLS_SERVER: &str = "tls-server";
    /// The relay's outgoing mTLS identity (CN `tmcs-relay`, CONTRACT §11).
    pub const RELAY_CLIENT: &str = "relay-client";
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("certificate profile: {0}")]
    Profile(String),
    #[error("certificate: {0}")]
    Invalid(String),
    #[error("certificate signing failed: {0}")]
    Signing(String),
    #[error("the PKI is not initialised ({0} missing); run `tmcs init`")]
    NotInitialised(String),
}

impl PkiError {
    /// An outage of the HSM or the database that may pass.
    pub fn is_transient(&self) -> bool {
        match self {
            PkiError::Hsm(e) => e.is_transient(),
            PkiError::Store(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl From<diesel::result::Error> for PkiError {
    fn from(e: diesel::result::Error) -> Self {
        PkiError::Store(e.into())
    }
}

impl From<openssl::error::ErrorStack> for PkiError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        PkiError::Invalid(e.to_string())
    }
}

/// Maps rcgen's error, recovering the HSM error behind a remote-key failure.
pub(crate) fn signing_error(e: rcgen::Error, signer: &HsmSigner<'_>) -> PkiError {
    match signer.take_error() {
        Some(h) => PkiError::Hsm(h),
        None => PkiError::Signing(e.to_string()),
    }
}

/// The server's HSM key ids.
#[derive(Debug, Clone)]
pub struct ServerKeyIds {
    pub root_ca: KeyId,
    pub issuing_ca: KeyId,
    pub transport: KeyId,
    pub display: KeyId,
    pub audit: KeyId,
    pub ocsp: KeyId,
    pub pin_pepper: KeyId,
}

/// A loaded CA or server certificate.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub info: CertInfo,
    /// Uncompressed P-256 point of its key.
    pub point: Vec<u8>,
}

impl LoadedCert {
    pub fn from_info(info: CertInfo) -> Result<LoadedCert, PkiError> {
        let point = point_from_spki(&info.spki_der)
            .ok_or_else(|| PkiError::Invalid(format!("{} is not a P-256 key", info.common_name)))?
            .to_vec();
        Ok(LoadedCert { info, point })
    }

    pub fn from_row(row: &certs::CertRow) -> Result<LoadedCert, PkiError> {
        let info = CertInfo::from_pem(&row.pem)?;
        let point = point_from_spki(&info.spki_der)
            .ok_or_else(|| PkiError::Invalid(format!("{} is not a P-256 key", row.purpose)))?
            .to_vec();
        Ok(LoadedCert { info, point })
    }
}

/// Everything needed to issue and to answer for the PKI.
#[derive(Clone)]
pub struct Pki {
    pub custody: std::sync::Arc<dyn Custody>,
    pub keys: ServerKeyIds,
    pub root: LoadedCert,
    pub issuing: LoadedCert,
    pub transport: LoadedCert,
    pub display: LoadedCert,
    pub audit: LoadedCert,
    pub ocsp: LoadedCert,
    pub profiles: Profiles,
    pub public_url: String,
    pub organization: String,
    pub country: String,
    /// CAs a party's given certificate must chain to, besides the tmcs CA
    /// (empty: any certificate is accepted).
    pub party_anchors: Vec<X509>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("root", &self.root.info.serial_hex)
            .field("issuing", &self.issuing.info.serial_hex)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct PkiSettings {
    pub public_url: String,
    pub organization: String,
    pub country: String,
    pub profiles: Profiles,
    /// CAs a party's given certificate must chain to (empty: any).
    pub party_anchors: Vec<X509>,
}

fn key_id(conn: &mut DbConn, name: &str) -> Result<KeyId, PkiError> {
    let row =
        keys::get(conn, name)?.ok_or_else(|| PkiError::NotInitialised(format!("key {name}")))?;
    Ok(KeyId::from_hex(&row.key_id)?)
}

fn current(conn: &mut DbConn, name: &str) -> Result<LoadedCert, PkiError> {
    let row = certs::current(conn, name)?
        .ok_or_else(|| PkiError::NotInitialised(format!("certificate {name}")))?;
    LoadedCert::from_row(&row)
}

impl Pki {
    /// Loads key ids and current certificates from the database.
    pub fn load(
        store: &Store,
        custody: std::sync::Arc<dyn Custody>,
        settings: PkiSettings,
    ) -> Result<Pki, PkiError> {
        store.read(|c| {
            Ok(Pki {
                keys: ServerKeyIds {
                    root_ca: key_id(c, names::ROOT_CA)?,
                    issuing_ca: key_id(c, names::ISSUING_CA)?,
                    transport: key_id(c, names::TRANSPORT)?,
                    display: key_id(c, names::DISPLAY)?,
                    audit: key_id(c, names::AUDIT)?,
                    ocsp: key_id(c, names::OCSP)?,
                    pin_pepper: key_id(c, names::PIN_PEPPER)?,
                },
                root: current(c, names::ROOT_CA)?,
                issuing: current(c, names::ISSUING_CA)?,
                transport: current(c, names::TRANSPORT)?,
                display: current(c, names::DISPLAY)?,
                audit: current(c, names::AUDIT)?,
                ocsp: current(c, names::OCSP)?,
                custody,
                profiles: settings.profiles,
                party_anchors: settings.party_anchors,
                public_url: settings.public_url,
                organization: settings.organization,
                country: settings.country,
            })
        })
    }

    /// Whether `cert` chains, at `now`, to a party trust anchor or the tmcs
    /// CA. Always true when no anchors are configured.
    pub fn party_chain_ok(&self, cert: &X509, now: OffsetDateTime) -> Result<bool, PkiError> {
        use openssl::stack::Stack;
        use openssl::x509::store::X509StoreBuilder;
        use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
        use openssl::x509::X509StoreContext;
        if self.party_anchors.is_empty() {
            return Ok(true);
        }
        let mut store = X509StoreBuilder::new()?;
        for a in &self.party_anchors {
            store.add_cert(a.clone())?;
        }
        store.add_cert(X509::from_der(&self.root.info.der)?)?;
        store.add_cert(X509::from_der(&self.issuing.info.der)?)?;
        let mut param = X509VerifyParam::new()?;
        param.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
        param.set_time(now.unix_timestamp());
        store.set_param(&param)?;
        let store = store.build();
        let chain = Stack::new()?;
        let mut ctx = X509StoreContext::new()?;
        let ok = ctx.init(&store, cert, &chain, |c| c.verify_cert())?;
        Ok(ok)
    }

    /// `ca.pem`: the root, then the issuing CA.
    pub fn ca_bundle_pem(&self) -> String {
        format!("{}{}", self.root.info.pem, self.issuing.info.pem)
    }

    pub fn audit_public_key(&self) -> Result<PKey<Public>, PkiError> {
        Ok(X509::from_der(&self.audit.info.der)?.public_key()?)
    }

    /// A signer for the issuing CA's HSM key.
    pub fn issuing_signer(&self) -> HsmSigner<'_> {
        HsmSigner::new(
            self.custody.as_ref(),
            self.keys.issuing_ca.clone(),
            self.issuing.point.clone(),
        )
    }

    pub fn subject(&self, common_name: &str, profile: &Profile) -> Subject {
        Subject {
            common_name: common_name.to_string(),
            organization: self.organization.clone(),
            organizational_unit: profile.organizational_unit.clone(),
            country: self.country.clone(),
        }
    }

    /// Issues a certificate from the issuing CA under `profile` for `subject_key`.
    pub fn issue(
        &self,
        profile: &str,
        common_name: &str,
        sans: Vec<String>,
        subject_key: &impl PublicKeyData,
        now: OffsetDateTime,
    ) -> Result<CertInfo, PkiError> {
        let profile = self.profiles.get(profile)?;
        let spec = CertSpec {
            profile,
            subject: self.subject(common_name, profile),
            sans,
            now,
            not_after_cap: None,
            public_url: &self.public_url,
        };
        issue_by(
            self.custody.as_ref(),
            &self.issuing,
            &self.keys.issuing_ca,
            spec,
            subject_key,
        )
    }
}

/// Issues `spec` for `subject_key`, signed in the HSM by the CA whose
/// certificate is `ca` and whose key is `ca_key`. Validity never outlasts the CA.
pub fn issue_by(
    hsm: &dyn Custody,
    ca: &LoadedCert,
    ca_key: &KeyId,
    mut spec: CertSpec<'_>,
    subject_key: &impl PublicKeyData,
) -> Result<CertInfo, PkiError> {
    spec.not_after_cap = Some(match spec.not_after_cap {
        Some(cap) => cap.min(ca.info.not_after),
        None => ca.info.not_after,
    });
    let serial = issue::random_serial()?;
    let params = issue::params(&spec, &serial)?;
    let signer = HsmSigner::new(hsm, ca_key.clone(), ca.point.clone());
    let issuer = Issuer::from_ca_cert_der(&ca.info.der.clone().into(), &signer)
        .map_err(|e| PkiError::Invalid(format!("CA certificate: {e}")))?;
    let der = issue::sign(&params, subject_key, &issuer).map_err(|e| signing_error(e, &signer))?;
    CertInfo::from_der(&der)
}

/// A self-signed root for the HSM key `key` with public point `point`.
pub fn self_signed_root(
    hsm: &dyn Custody,
    key: &KeyId,
    point: Vec<u8>,
    spec: CertSpec<'_>,
) -> Result<CertInfo, PkiError> {
    let serial = issue::random_serial()?;
    let params = issue::params(&spec, &serial)?;
    let signer = HsmSigner::new(hsm, key.clone(), point);
    let der = issue::self_sign(&params, &signer).map_err(|e| signing_error(e, &signer))?;
    CertInfo::from_der(&der)
}
