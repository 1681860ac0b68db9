//! Configuration: TOML with `deny_unknown_fields`, an environment overlay
//! (`TMCS_<SECTION>__<KEY>`), and embedded defaults that work on one machine.
//!
//! The layers are merged and read with figment: the file (`Toml`), then
//! one provider per `TMCS_*` variable (`EnvVar`); figment's errors name
//! the key and, here, the file or the variable it came from.
//!
//! The file layer ([`FileConfig`]) is what operators write; [`Config`] is the
//! validated, resolved form the rest of the program uses (every path is
//! absolute and every default that depends on the data dir is filled in).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::SecretString;
use serde::Deserialize;

/// The commented reference configuration shipped in the repository; also the
/// embedded defaults (parsing it must give exactly `FileConfig::default()`).
pub const REFERENCE_CONFIG: &str = include_str!("../tmcs.example.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Invalid { origin: String, message: String },
}

fn invalid(origin: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub server: ServerSection,
    pub database: DatabaseSection,
    pub hsm: HsmSection,
    pub pki: PkiSection,
    pub policy: PolicySection,
    pub pin: PinSection,
    pub relay: RelaySection,
    pub audit: AuditSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: String,
    /// Worker threads for HTTP; 0 means one per core.
    pub workers: usize,
    /// Extra DNS names / IPs for the server TLS certificate (besides localhost, 127.0.0.1).
    pub tls_names: Vec<String>,
    /// Public base URL written into certificates (OCSP responder, CRL distribution point).
    pub public_url: String,
    pub max_body_bytes: usize,
    pub request_timeout_seconds: u64,
    /// The whole request body must arrive within this time (else 408).
    pub body_timeout_seconds: u64,
    pub max_connections: usize,
    /// Open connections one client address may hold at once.
    pub max_connections_per_ip: usize,
    /// Refused requests (bad credentials or input) allowed per client
    /// address per second, with `refusal_burst` in reserve; beyond, 429.
    pub refusals_per_second: u32,
    pub refusal_burst: u32,
    /// Blocking work (DB transactions with HSM calls) allowed at once.
    pub blocking_threads: usize,
    pub log_format: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            workers: 0,
            tls_names: Vec::new(),
            public_url: "https://localhost:8443".into(),
            max_body_bytes: 64 * 1024,
            request_timeout_seconds: 30,
            body_timeout_seconds: 10,
            max_connections: 10_000,
            max_connections_per_ip: 64,
            refusals_per_second: 10,
            refusal_burst: 100,
            blocking_threads: 32,
            log_format: "text".into(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// `sqlite://PATH` or `postgres://…`; empty means `sqlite://<data>/tmcs.db`.
    pub url: String,
    pub pool_size: u32,
    pub connect_timeout_seconds: u64,
    /// SQLite only: how long a writer waits for the lock held by another
    /// process (the writers of one process take turns before they begin).
    pub busy_timeout_ms: u64,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 8,
            connect_timeout_seconds: 10,
            busy_timeout_ms: 10_000,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HsmSection {
    pub module: String,
    pub token_label: String,
    /// File holding the user PIN; empty means `<data>/hsm.pin`.
    pub pin_file: String,
    /// Only from the environment (`TMCS_HSM__PIN`); rejected in a file.
    pub pin: Option<SecretString>,
    /// SoftHSM2 only: the config file the module reads; empty means
    /// `<data>/softhsm/softhsm2.conf`. Set to "-" to leave `SOFTHSM2_CONF` alone.
    pub softhsm_conf: String,
    /// Where subscriber keys live: wrapped under a KEK in the database
    /// (default), or one token object each.
    pub key_storage: KeyStorage,
    /// File holding the token's SO PIN, needed to create a trusted KEK
    /// (`tmcs init`, `tmcs hsm rewrap`); empty means `so.pin` beside the
    /// SoftHSM2 config.
    pub so_pin_file: String,
    /// Sessions kept open in the pool.
    pub sessions: usize,
    /// How long an operation waits for a free session.
    pub session_timeout_ms: u64,
}

/// `hsm.key_storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStorage {
    /// Each subscriber key wrapped (`CKM_AES_KEY_WRAP_PAD`) under a trusted
    /// KEK and kept in the database; unwrapped into a session object to sign.
    Wrapped,
    /// Each subscriber key a token object (the pre-1.1 layout).
    Token,
}

impl KeyStorage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStorage::Wrapped => "wrapped",
            KeyStorage::Token => "token",
        }
    }
}

impl std::fmt::Debug for HsmSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmSection")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin_file", &self.pin_file)
            .field("pin", &self.pin.as_ref().map(|_| "[redacted]"))
            .field("softhsm_conf", &self.softhsm_conf)
            .field("key_storage", &self.key_storage)
            .field("so_pin_file", &self.so_pin_file)
            .field("sessions", &self.sessions)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .finish()
    }
}

impl Default for HsmSection {
    fn default() -> Self {
        Self {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "tmcs".into(),
            pin_file: String::new(),
            pin: None,
            softhsm_conf: String::new(),
            key_storage: KeyStorage::Wrapped,
            so_pin_file: String::new(),
            sessions: 8,
            session_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PkiSection {
    pub organization: String,
    pub country: String,
    pub root_common_name: String,
    pub issuing_common_name: String,
    /// Directory with certificate profiles overriding the embedded ones (`pki/profiles`).
    pub profiles_dir: String,
    /// Seconds between a CRL's thisUpdate and nextUpdate.
    pub crl_next_update_seconds: u64,
    /// Seconds an OCSP answer may be cached by the client (nextUpdate).
    pub ocsp_next_update_seconds: u64,
    /// PEM bundle of CAs a party's given certificate must chain to (besides
    /// the tmcs CA); empty accepts any certificate with a suitable key.
    pub party_trust_anchors: String,
    /// Plain-HTTP listener for `/pki/*` only (RFC 5280 relying parties fetch
    /// CRLs and OCSP over http://); empty disables it.
    pub http_listen: String,
    /// Base URL of the public PKI written into issued certificates (AIA
    /// OCSP, CRL distribution point); empty means `server.public_url`.
    pub public_base_url: String,
    /// OCSP nonces: `ignore` (answer from the pre-signed cache, RFC 8954 §2.1)
    /// or `echo` (sign a fresh answer carrying the nonce).
    pub ocsp_nonce: String,
}

impl Default for PkiSection {
    fn default() -> Self {
        Self {
            organization: "tmcs".into(),
            country: String::new(),
            root_common_name: "tmcs Root CA".into(),
            issuing_common_name: "tmcs Issuing CA".into(),
            profiles_dir: String::new(),
            crl_next_update_seconds: 86_400,
            ocsp_next_update_seconds: 3_600,
            party_trust_anchors: String::new(),
            http_listen: "127.0.0.1:8080".into(),
            public_base_url: "http://localhost:8080".into(),
            ocsp_nonce: "ignore".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CurrencyPolicy {
    /// Largest amount (in the currency's major units, as a decimal string) of tier `small`.
    pub small_max: String,
    pub medium_max: String,
    pub per_payment_max: String,
    pub daily_max: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    pub request_ttl_seconds: u64,
    pub max_clock_skew_seconds: u64,
    pub currencies: BTreeMap<String, CurrencyPolicy>,
}

impl Default for PolicySection {
    fn default() -> Self {
        let eur = CurrencyPolicy {
            small_max: "50.00".into(),
            medium_max: "1000.00".into(),
            per_payment_max: "10000.00".into(),
            daily_max: "20000.00".into(),
        };
        let mut currencies = BTreeMap::new();
        currencies.insert("EUR".into(), eur.clone());
        currencies.insert("USD".into(), eur);
        Self {
            request_ttl_seconds: 120,
            max_clock_skew_seconds: 300,
            currencies,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PinSection {
    pub max_attempts: u32,
    pub min_length: usize,
    pub max_length: usize,
    pub activation_code_digits: usize,
    pub activation_ttl_hours: u64,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// argon2 hashes computed at once (each takes `argon2_memory_kib`);
    /// 0 means one per CPU core.
    pub argon2_concurrency: usize,
}

impl Default for PinSection {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            min_length: 4,
            max_length: 12,
            activation_code_digits: 8,
            activation_ttl_hours: 72,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            argon2_concurrency: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    pub enabled: bool,
    /// `fsp` (the FSP moves the money and reports back) or `fsp+bank`
    /// (tmcs instructs the bank itself).
    pub mode: String,
    /// The bank party's id (mode `fsp+bank`).
    pub bank: String,
    /// PEM bundle of the CAs callback servers' certificates must chain to;
    /// empty means `<data>/ca.pem`.
    pub ca_file: String,
    pub timeout_seconds: u64,
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Deliveries in flight per receiver at once.
    pub per_target_concurrency: usize,
    /// How often an idle worker looks for due deliveries.
    pub poll_interval_ms: u64,
    /// This node's name in delivery leases; empty means `<hostname>/<server.listen>`.
    pub node_id: String,
    /// `InitgPty/Nm` of pain.001; empty means `pki.organization`.
    pub initiating_party: String,
    /// BICs for `DbtrAgt` and `CdtrAgt`; empty means `Othr/Id` `NOTPROVIDED`.
    pub debtor_agent_bic: String,
    pub creditor_agent_bic: String,
    /// The currency of an instrument's micro-amount (CONTRACT §12; two
    /// minor digits).
    pub instrument_currency: String,
    /// How long a reserved amount waits for the subscriber's confirmation.
    pub instrument_ttl_seconds: u64,
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: "fsp".into(),
            bank: String::new(),
            ca_file: String::new(),
            timeout_seconds: 10,
            max_attempts: 8,
            initial_backoff_ms: 500,
            max_backoff_ms: 60_000,
            per_target_concurrency: 4,
            poll_interval_ms: 200,
            node_id: String::new(),
            initiating_party: String::new(),
            debtor_agent_bic: String::new(),
            creditor_agent_bic: String::new(),
            instrument_currency: "EUR".into(),
            instrument_ttl_seconds: 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Seconds between signed checkpoints while serving (only when new events exist).
    pub checkpoint_interval_seconds: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            checkpoint_interval_seconds: 60,
        }
    }
}

impl std::fmt::Debug for DatabaseSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSection")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The resolved configuration.
#[derive(Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub file: FileConfig,
    pub database_url: String,
    pub hsm_pin_file: PathBuf,
    /// The SO PIN file (`hsm.so_pin_file`; for SoftHSM2 `so.pin` beside its
    /// config by default). `None`: no SO PIN, so no KEK can be created.
    pub hsm_so_pin_file: Option<PathBuf>,
    /// `None` when the module is not SoftHSM2 or the operator opted out.
    pub softhsm_conf: Option<PathBuf>,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub clients_dir: PathBuf,
    pub ca_pem: PathBuf,
    /// The relay's mTLS client certificate (CN `tmcs-relay`, chain) and key,
    /// issued by `tmcs init`.
    pub relay_cert: PathBuf,
    pub relay_key: PathBuf,
    /// The CAs callback servers must chain to (`relay.ca_file`, default `ca.pem`).
    pub relay_ca: PathBuf,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("file", &self.file)
            .field("database_url", &redact_url(&self.database_url))
            .field("hsm_pin_file", &self.hsm_pin_file)
            .field("softhsm_conf", &self.softhsm_conf)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Loads `path` (or the embedded defaults when `None`), applies the
    /// environment overlay from `env` (the `TMCS_*` variables; the caller
    /// passes them, so tests and tools need not change the process
    /// environment), and resolves paths against `data_dir`.
    pub fn load(
        path: Option<&Path>,
        data_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (origin, layers) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                let file = Figment::from(Toml::string(&text));
                if file.find_value("hsm.pin").is_ok() {
                    return Err(invalid(
                        p.display().to_string(),
                        "hsm.pin must not be in a file; use TMCS_HSM__PIN or hsm.pin_file",
                    ));
                }
                (p.display().to_string(), file)
            }
            None => ("(embedded defaults)".to_string(), Figment::new()),
        };
        let overlay = env_overlay(env)?;
        let figment = overlay.iter().cloned().fold(layers, Figment::merge);
        let file: FileConfig = figment
            .extract()
            .map_err(|e| figment_error(e, &origin, &overlay))?;
        Self::resolve(file, data_dir)
    }

    fn resolve(file: FileConfig, data_dir: &Path) -> Result<Config, ConfigError> {
        let data_dir = absolute(data_dir);
        let at = |s: &str, default: &str| -> PathBuf {
            if s.is_empty() {
                data_dir.join(default)
            } else {
                absolute_in(&data_dir, Path::new(s))
            }
        };
        let database_url = if file.database.url.is_empty() {
            format!("sqlite://{}", data_dir.join("tmcs.db").display())
        } else if let Some(rel) = file
            .database
            .url
            .strip_prefix("sqlite://")
            .filter(|p| !p.starts_with('/'))
        {
            // Relative SQLite paths are relative to the data dir, like every other path.
            format!("sqlite://{}", data_dir.join(rel).display())
        } else {
            file.database.url.clone()
        };
        if !(database_url.starts_with("sqlite://")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        let softhsm_conf = if file.hsm.softhsm_conf == "-" || !is_softhsm(&file.hsm.module) {
            None
        } else {
            Some(at(&file.hsm.softhsm_conf, "softhsm/softhsm2.conf"))
        };
        let hsm_so_pin_file = if file.hsm.so_pin_file.is_empty() {
            softhsm_conf.as_ref().map(|c| c.with_file_name("so.pin"))
        } else {
            Some(absolute_in(&data_dir, Path::new(&file.hsm.so_pin_file)))
        };
        let c = Config {
            hsm_pin_file: at(&file.hsm.pin_file, "hsm.pin"),
            hsm_so_pin_file,
            softhsm_conf,
            tls_cert: data_dir.join("tls/server.crt"),
            tls_key: data_dir.join("tls/server.key"),
            clients_dir: data_dir.join("clients"),
            ca_pem: data_dir.join("ca.pem"),
            relay_cert: data_dir.join("relay/client.crt"),
            relay_key: data_dir.join("relay/client.key"),
            relay_ca: at(&file.relay.ca_file, "ca.pem"),
            database_url,
            data_dir,
            file,
        };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let f = &self.file;
        if f.hsm.sessions == 0 {
            return Err(invalid("hsm.sessions", "must be at least 1"));
        }
        if f.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be at least 1"));
        }
        if f.pin.max_attempts == 0 {
            return Err(invalid("pin.max_attempts", "must be at least 1"));
        }
        if f.pin.min_length < 4 || f.pin.max_length > 12 || f.pin.min_length > f.pin.max_length {
            return Err(invalid(
                "pin",
                "min_length/max_length must satisfy 4 <= min <= max <= 12",
            ));
        }
        if f.pin.activation_code_digits < 8 || f.pin.activation_code_digits > 18 {
            return Err(invalid("pin.activation_code_digits", "must be 8..=18"));
        }
        if f.server.blocking_threads == 0 {
            return Err(invalid("server.blocking_threads", "must be at least 1"));
        }
        if f.policy.request_ttl_seconds == 0 {
            return Err(invalid("policy.request_ttl_seconds", "must be positive"));
        }
        if !matches!(f.server.log_format.as_str(), "text" | "json") {
            return Err(invalid("server.log_format", "must be \"text\" or \"json\""));
        }
        if !matches!(f.pki.ocsp_nonce.as_str(), "ignore" | "echo") {
            return Err(invalid("pki.ocsp_nonce", "must be \"ignore\" or \"echo\""));
        }
        Ok(())
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite://")
    }
}

pub fn is_softhsm(module: &str) -> bool {
    module.contains("softhsm")
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn absolute_in(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// One variable of the environment overlay, a figment provider:
/// `TMCS_<SECTION>__<KEY>=value` sets `section.key`, as figment's
/// `Env::prefixed("TMCS_").split("__")` would (lowercased, `__` splits
/// deeper). Env itself reads only the process environment and types every
/// value by its look (`0012` would become the number 12); here the value
/// takes the type the key has in the reference config: a key that is a
/// string there (or not listed, such as `hsm.pin`) keeps the text as it is;
/// any other key is parsed with figment's value syntax (integers, booleans,
/// arrays `["a","b"]`, tables `{k = v}`), and a value of the wrong type is
/// an error naming the variable.
#[derive(Debug, Clone)]
struct EnvVar {
    /// The variable as given, e.g. `TMCS_PIN__MAX_ATTEMPTS`.
    name: String,
    /// The dotted key it sets, e.g. `pin.max_attempts`.
    key: String,
    value: Value,
}

const ENV_PREFIX: &str = "TMCS_";
const ENV_SPLIT: &str = "__";

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment {}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = figment::util::nest(&self.key, self.value.clone())
            .into_dict()
            .ok_or_else(|| figment::Error::from(format!("{}: empty key", self.name)))?;
        Ok(Profile::Default.collect(dict))
    }
}

/// The overlay's variables among `env`, in order (a later one wins).
/// Variables without `__` after the prefix (`TMCS_TEST_PG`) are not config.
fn env_overlay(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<EnvVar>, ConfigError> {
    let reference = Figment::from(Toml::string(REFERENCE_CONFIG));
    let mut vars = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains(ENV_SPLIT) {
            continue;
        }
        let parts: Vec<String> = rest.split(ENV_SPLIT).map(str::to_ascii_lowercase).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid(
                format!("environment {name}"),
                "empty section or key",
            ));
        }
        let key = parts.join(".");
        let value = match reference.find_value(&key) {
            Ok(Value::String(..)) | Err(_) => Value::from(raw),
            Ok(_) => raw.parse::<Value>().unwrap_or_else(|never| match never {}),
        };
        vars.push(EnvVar { name, key, value });
    }
    Ok(vars)
}

/// The first of figment's errors as ours: the origin is the variable that
/// set the key in error or a table above it, else one that set a key below
/// it (an unknown section, a table left incomplete), else the file.
fn figment_error(e: figment::Error, file: &str, overlay: &[EnvVar]) -> ConfigError {
    let path = e.path.join(".");
    let from_env = overlay
        .iter()
        .rev()
        .find(|v| path == v.key || path.starts_with(&format!("{}.", v.key)))
        .or_else(|| {
            overlay
                .iter()
                .rev()
                .find(|v| v.key.starts_with(&format!("{path}.")))
        });
    let origin = match from_env {
        Some(v) => format!("environment {}", v.name),
        None => file.to_string(),
    };
    let message = if path.is_empty() || from_env.is_some_and(|v| v.key == path) {
        e.kind.to_string()
    } else {
        format!("{path}: {}", e.kind)
    };
    invalid(origin, message)
}

/// The environment variables of this process that belong to the overlay.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("TMCS_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn reference_config_equals_embedded_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ref.toml");
        std::fs::write(&p, REFERENCE_CONFIG).unwrap();
        let from_file = Config::load(Some(&p), dir.path(), env(&[])).unwrap();
        let embedded = Config::load(None, dir.path(), env(&[])).unwrap();
        assert_eq!(
            format!("{:?}", from_file.file),
            format!("{:?}", embedded.file)
        );
        assert_eq!(embedded.file.server.listen, "127.0.0.1:8443");
        assert_eq!(embedded.file.policy.request_ttl_seconds, 120);
        assert_eq!(embedded.file.pin.max_attempts, 3);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[server]\nlisen = \"x\"\n").unwrap();
        let err = Config::load(Some(&p), dir.path(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        std::fs::write(&p, "[nosuch]\nx = 1\n").unwrap();
        assert!(Config::load(Some(&p), dir.path(), env(&[])).is_err());
    }

    #[test]
    fn env_overlay_sets_values_and_types() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(
            None,
            dir.path(),
            env(&[
                ("TMCS_SERVER__LISTEN", "0.0.0.0:9443"),
                ("TMCS_PIN__MAX_ATTEMPTS", "5"),
                ("TMCS_HSM__PIN", "123456"),
                ("TMCS_DATABASE__URL", "postgres://u@h/db"),
            ]),
        )
        .unwrap();
        assert_eq!(c.file.server.listen, "0.0.0.0:9443");
        assert_eq!(c.file.pin.max_attempts, 5);
        assert_eq!(c.file.hsm.pin.as_ref().unwrap().expose_secret(), "123456");
        assert!(!c.is_sqlite());
        assert!(!format!("{:?}", c).contains("123456"));
        let c = Config::load(
            None,
            dir.path(),
            env(&[(
                "TMCS_DATABASE__URL",
                "postgres://tmcs:s3cr3t-pw@db:5432/tmcs",
            )]),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("s3cr3t-pw") && dbg.contains("postgres://tmcs:***@db:5432/tmcs"),
            "{dbg}"
        );
        assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
        let bad = Config::load(None, dir.path(), env(&[("TMCS_PIN__NOPE", "1")]));
        assert!(bad.is_err());
        let bad = Config::load(
            None,
            dir.path(),
            env(&[("TMCS_PIN__MAX_ATTEMPTS", "three")]),
        );
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("TMCS_PIN__MAX_ATTEMPTS"));
        let c = Config::load(
            None,
            dir.path(),
            env(&[
                ("TMCS_SERVER__TLS_NAMES", "[\"tmcs.example\"]"),
                ("TMCS_RELAY__ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.file.server.tls_names, vec!["tmcs.example".to_string()]);
        assert!(!c.file.relay.enabled);
    }

    #[test]
    fn env_overlay_names_the_variable_and_keeps_text() {
        let dir = tempfile::tempdir().unwrap();
        // A numeric PIN stays the text it is (leading zeros included).
        let c = Config::load(None, dir.path(), env(&[("TMCS_HSM__PIN", "0012")])).unwrap();
        assert_eq!(c.file.hsm.pin.as_ref().unwrap().expose_secret(), "0012");
        // String keys keep the text verbatim, numbers and all.
        let c = Config::load(
            None,
            dir.path(),
            env(&[
                ("TMCS_HSM__TOKEN_LABEL", "007"),
                ("TMCS_TEST_PG", "required"),
            ]),
        )
        .unwrap();
        assert_eq!(c.file.hsm.token_label, "007");
        // An unknown key from the environment names the variable; so does an empty part.
        for name in ["TMCS_PIN__NOPE", "TMCS_NOSUCH__X", "TMCS_PIN__", "TMCS___X"] {
            let err = Config::load(None, dir.path(), env(&[(name, "1")])).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        let err = Config::load(None, dir.path(), env(&[("TMCS_RELAY__ENABLED", "yes")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TMCS_RELAY__ENABLED"), "{err}");
        // A file's errors name the file and the key; the environment overrides the file.
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[pin]\nmax_attempts = \"x\"\n").unwrap();
        let err = Config::load(Some(&p), dir.path(), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.toml") && err.contains("pin.max_attempts"),
            "{err}"
        );
        let c = Config::load(
            Some(&p),
            dir.path(),
            env(&[("TMCS_PIN__MAX_ATTEMPTS", "4")]),
        )
        .unwrap();
        assert_eq!(c.file.pin.max_attempts, 4);
        std::fs::write(&p, "[server\n").unwrap();
        let err = Config::load(Some(&p), dir.path(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("c.toml"), "{err}");
    }

    #[test]
    fn hsm_pin_in_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin.toml");
        std::fs::write(&p, "[hsm]\npin = \"1234\"\n").unwrap();
        let err = Config::load(Some(&p), dir.path(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("TMCS_HSM__PIN"));
        assert!(!err.to_string().contains("1234"));
    }

    #[test]
    fn defaults_live_under_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(None, dir.path(), env(&[])).unwrap();
        assert_eq!(
            c.database_url,
            format!("sqlite://{}", dir.path().join("tmcs.db").display())
        );
        assert_eq!(c.hsm_pin_file, dir.path().join("hsm.pin"));
        assert_eq!(
            c.softhsm_conf.as_deref(),
            Some(dir.path().join("softhsm/softhsm2.conf").as_path())
        );
    }
}
