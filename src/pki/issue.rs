//! Building certificates from profiles and signing them with HSM CA keys.

use der::Encode;
use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName,
    DnType, IsCa, Issuer, KeyIdMethod, PublicKeyData, SanType, SerialNumber, SigningKey,
};
use time::{Duration, OffsetDateTime};

use super::{PkiError, Profile};

/// The subject of a certificate to issue.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub common_name: String,
    pub organization: String,
    pub organizational_unit: String,
    pub country: String,
}

impl Subject {
    fn to_dn(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        if !self.country.is_empty() {
            dn.push(DnType::CountryName, self.country.as_str());
        }
        if !self.organization.is_empty() {
            dn.push(DnType::OrganizationName, self.organization.as_str());
        }
        if !self.organizational_unit.is_empty() {
            dn.push(
                DnType::OrganizationalUnitName,
                self.organizational_unit.as_str(),
            );
        }
        dn.push(DnType::CommonName, self.common_name.as_str());
        dn
    }
}

/// Everything beyond the profile that goes into one certificate.
#[derive(Debug, Clone)]
pub struct CertSpec<'a> {
    pub profile: &'a Profile,
    pub subject: Subject,
    /// DNS names or IP addresses.
    pub sans: Vec<String>,
    pub now: OffsetDateTime,
    /// The issuer's notAfter: nothing outlives its CA.
    pub not_after_cap: Option<OffsetDateTime>,
    /// Base URL for the CRL distribution point and OCSP responder.
    pub public_url: &'a str,
}

/// 16 random bytes, first byte in 0x40..=0x7f: positive, no leading zero,
/// always 32 hex digits.
pub fn random_serial() -> Result<Vec<u8>, PkiError> {
    let mut s = vec![0u8; 16];
    openssl::rand::rand_bytes(&mut s).map_err(|e| PkiError::Invalid(format!("random: {e}")))?;
    if let Some(first) = s.first_mut() {
        *first = 0x40 | (*first & 0x3f);
    }
    Ok(s)
}

const OID_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
const OID_OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];

fn aia_ocsp(url: &str) -> Result<CustomExtension, PkiError> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    let uri =
        der::asn1::Ia5String::new(url).map_err(|e| PkiError::Invalid(format!("OCSP URL: {e}")))?;
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: const_oid::db::rfc5280::ID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(uri),
    }]);
    let der = aia
        .to_der()
        .map_err(|e| PkiError::Invalid(format!("AIA: {e}")))?;
    Ok(CustomExtension::from_oid_content(OID_AIA, der))
}

/// Certificate parameters for `spec` with serial `serial`.
pub fn params(spec: &CertSpec<'_>, serial: &[u8]) -> Result<CertificateParams, PkiError> {
    let p = spec.profile;
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(serial));
    // Allow for clocks a little behind ours.
    params.not_before = spec.now - Duration::minutes(5);
    let mut not_after = spec.now + Duration::days(i64::from(p.validity_days));
    if let Some(cap) = spec.not_after_cap {
        not_after = not_after.min(cap);
    }
    params.not_after = not_after;
    params.distinguished_name = spec.subject.to_dn();
    params.is_ca = if p.ca {
        IsCa::Ca(BasicConstraints::Constrained(p.path_len.unwrap_or(0)))
    } else {
        IsCa::ExplicitNoCa
    };
    params.key_usages = p.key_usages().map_err(PkiError::Profile)?;
    params.extended_key_usages = p.extended_key_usages().map_err(PkiError::Profile)?;
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.subject_alt_names = spec
        .sans
        .iter()
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| PkiError::Invalid(format!("SAN {s:?}: {e}"))),
        })
        .collect::<Result<_, _>>()?;
    let base = spec.public_url.trim_end_matches('/');
    if p.crl_distribution_point {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![format!("{base}/pki/crl")],
        }];
    }
    if p.ocsp_url {
        params
            .custom_extensions
            .push(aia_ocsp(&format!("{base}/pki/ocsp"))?);
    }
    if p.ocsp_nocheck {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                OID_OCSP_NOCHECK,
                vec![0x05, 0x00],
            ));
    }
    Ok(params)
}

/// Signs `params` for `subject_key` with `issuer`. Returns the DER.
pub fn sign(
    params: &CertificateParams,
    subject_key: &impl PublicKeyData,
    issuer: &Issuer<'_, impl SigningKey>,
) -> Result<Vec<u8>, rcgen::Error> {
    Ok(params.signed_by(subject_key, issuer)?.der().to_vec())
}

/// A self-signed certificate (the root).
pub fn self_sign(
    params: &CertificateParams,
    key: &impl SigningKey,
) -> Result<Vec<u8>, rcgen::Error> {
    let mut params = params.clone();
    // A self-signed root carries no authority key identifier.
    params.use_authority_key_identifier_extension = false;
    Ok(params.self_signed(key)?.der().to_vec())
}
