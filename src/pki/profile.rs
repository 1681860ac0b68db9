//! Certificate profiles: `pki/profiles/<name>.toml`, embedded in the binary
//! and optionally overridden from `pki.profiles_dir`.

use std::collections::BTreeMap;
use std::path::Path;

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use serde::Deserialize;

use super::PkiError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(skip)]
    pub name: String,
    pub description: String,
    pub validity_days: u32,
    pub ca: bool,
    #[serde(default)]
    pub path_len: Option<u8>,
    pub key_usage: Vec<String>,
    pub extended_key_usage: Vec<String>,
    pub crl_distribution_point: bool,
    pub ocsp_url: bool,
    pub ocsp_nocheck: bool,
    pub organizational_unit: String,
}

const EMBEDDED: &[(&str, &str)] = &[
    ("root-ca", include_str!("../../pki/profiles/root-ca.toml")),
    (
        "issuing-ca",
        include_str!("../../pki/profiles/issuing-ca.toml"),
    ),
    (
        "tls-server",
        include_str!("../../pki/profiles/tls-server.toml"),
    ),
    (
        "tls-client",
        include_str!("../../pki/profiles/tls-client.toml"),
    ),
    (
        "transport",
        include_str!("../../pki/profiles/transport.toml"),
    ),
    ("display", include_str!("../../pki/profiles/display.toml")),
    ("audit", include_str!("../../pki/profiles/audit.toml")),
    ("ocsp", include_str!("../../pki/profiles/ocsp.toml")),
    (
        "subscriber",
        include_str!("../../pki/profiles/subscriber.toml"),
    ),
    ("party", include_str!("../../pki/profiles/party.toml")),
];

#[derive(Debug, Clone)]
pub struct Profiles {
    map: BTreeMap<String, Profile>,
}

impl Profiles {
    /// The embedded profiles, each replaced by `<dir>/<name>.toml` when that exists.
    pub fn load(dir: Option<&Path>) -> Result<Profiles, PkiError> {
        let mut map = BTreeMap::new();
        for (name, text) in EMBEDDED {
            let (origin, text) = match dir.map(|d| d.join(format!("{name}.toml"))) {
                Some(p) if p.exists() => (
                    p.display().to_string(),
                    std::fs::read_to_string(&p)
                        .map_err(|e| PkiError::Profile(format!("{}: {e}", p.display())))?,
                ),
                _ => (format!("embedded {name}.toml"), (*text).to_string()),
            };
            let mut p: Profile = toml::from_str(&text)
                .map_err(|e| PkiError::Profile(format!("{origin}: {}", e.message())))?;
            p.name = (*name).to_string();
            p.validate()
                .map_err(|m| PkiError::Profile(format!("{origin}: {m}")))?;
            map.insert((*name).to_string(), p);
        }
        Ok(Profiles { map })
    }

    pub fn get(&self, name: &str) -> Result<&Profile, PkiError> {
        self.map
            .get(name)
            .ok_or_else(|| PkiError::Profile(format!("no profile {name:?}")))
    }
}

impl Profile {
    fn validate(&self) -> Result<(), String> {
        if self.validity_days == 0 {
            return Err("validity_days must be positive".into());
        }
        self.key_usages()?;
        self.extended_key_usages()?;
        if self.ca && self.path_len.is_none() {
            return Err("a CA profile needs path_len".into());
        }
        Ok(())
    }

    pub fn key_usages(&self) -> Result<Vec<KeyUsagePurpose>, String> {
        self.key_usage
            .iter()
            .map(|k| {
                Ok(match k.as_str() {
                    "digital_signature" => KeyUsagePurpose::DigitalSignature,
                    "non_repudiation" | "content_commitment" => KeyUsagePurpose::ContentCommitment,
                    "key_encipherment" => KeyUsagePurpose::KeyEncipherment,
                    "data_encipherment" => KeyUsagePurpose::DataEncipherment,
                    "key_agreement" => KeyUsagePurpose::KeyAgreement,
                    "key_cert_sign" => KeyUsagePurpose::KeyCertSign,
                    "crl_sign" => KeyUsagePurpose::CrlSign,
                    other => return Err(format!("unknown key_usage {other:?}")),
                })
            })
            .collect()
    }

    pub fn extended_key_usages(&self) -> Result<Vec<ExtendedKeyUsagePurpose>, String> {
        self.extended_key_usage
            .iter()
            .map(|k| {
                Ok(match k.as_str() {
                    "server_auth" => ExtendedKeyUsagePurpose::ServerAuth,
                    "client_auth" => ExtendedKeyUsagePurpose::ClientAuth,
                    "ocsp_signing" => ExtendedKeyUsagePurpose::OcspSigning,
                    "code_signing" => ExtendedKeyUsagePurpose::CodeSigning,
                    "email_protection" => ExtendedKeyUsagePurpose::EmailProtection,
                    "time_stamping" => ExtendedKeyUsagePurpose::TimeStamping,
                    other => return Err(format!("unknown extended_key_usage {other:?}")),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_profiles_load() {
        let p = Profiles::load(None).unwrap();
        let sub = p.get("subscriber").unwrap();
        assert_eq!(
            sub.key_usages().unwrap(),
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::ContentCommitment
            ]
        );
        assert!(p.get("ocsp").unwrap().ocsp_nocheck);
        assert_eq!(p.get("issuing-ca").unwrap().path_len, Some(0));
        assert!(p.get("nope").is_err());
    }

    #[test]
    fn override_dir_replaces_a_profile_and_bad_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../../pki/profiles/subscriber.toml").replace("730", "30");
        std::fs::write(dir.path().join("subscriber.toml"), text).unwrap();
        let p = Profiles::load(Some(dir.path())).unwrap();
        assert_eq!(p.get("subscriber").unwrap().validity_days, 30);
        assert_eq!(p.get("party").unwrap().validity_days, 730);
        std::fs::write(
            dir.path().join("party.toml"),
            include_str!("../../pki/profiles/party.toml").replace("client_auth", "bogus"),
        )
        .unwrap();
        assert!(Profiles::load(Some(dir.path())).is_err());
    }
}
