//! Wiring: turns a [`Config`] into the opened parts (store, HSM, PKI) that
//! commands and the HTTP service share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::fsutil;
use crate::hsm::{Custody, Hsm, HsmError, HsmMetrics, HsmSettings};
use crate::pki::{Pki, PkiError, PkiSettings, Profiles};
use crate::signing::Policy;
use crate::store::{Store, StoreError, StoreSettings};
use crate::subscriber::pin::PinHasher;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("HSM: {0}")]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("{0}")]
    Setup(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        AppError::Store(e.into())
    }
}

pub fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AppError + '_ {
    move |source| AppError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn store_settings(cfg: &Config) -> StoreSettings {
    StoreSettings {
        url: cfg.database_url.clone(),
        pool_size: cfg.file.database.pool_size,
        connect_timeout: Duration::from_secs(cfg.file.database.connect_timeout_seconds),
        busy_timeout_ms: cfg.file.database.busy_timeout_ms,
    }
}

pub fn hsm_settings(cfg: &Config, pin: SecretString) -> HsmSettings {
    HsmSettings {
        module: cfg.file.hsm.module.clone(),
        token_label: cfg.file.hsm.token_label.clone(),
        pin,
        sessions: cfg.file.hsm.sessions,
        session_timeout: Duration::from_millis(cfg.file.hsm.session_timeout_ms),
        softhsm_conf: cfg.softhsm_conf.clone(),
    }
}

/// The configured HSM user PIN: `TMCS_HSM__PIN`, else the PIN file.
pub fn hsm_pin(cfg: &Config) -> Result<SecretString, AppError> {
    if let Some(pin) = &cfg.file.hsm.pin {
        return Ok(pin.clone());
    }
    fsutil::read_secret_file(&cfg.hsm_pin_file).map_err(|e| {
        AppError::Setup(format!(
            "HSM PIN: {e} (set TMCS_HSM__PIN or hsm.pin_file, or run `tmcs init`)"
        ))
    })
}

pub fn pki_settings(cfg: &Config) -> Result<PkiSettings, AppError> {
    let dir = (!cfg.file.pki.profiles_dir.is_empty())
        .then(|| cfg.data_dir.join(&cfg.file.pki.profiles_dir));
    let party_anchors = match cfg.file.pki.party_trust_anchors.as_str() {
        "" => Vec::new(),
        path => {
            let path = cfg.data_dir.join(path);
            let pem = std::fs::read(&path).map_err(io_err(&path))?;
            let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| {
                AppError::Setup(format!("pki.party_trust_anchors {}: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(AppError::Setup(format!(
                    "pki.party_trust_anchors {}: no certificate in it",
                    path.display()
                )));
            }
            certs
        }
    };
    let public_url = match cfg.file.pki.public_base_url.as_str() {
        "" => cfg.file.server.public_url.clone(),
        base => base.to_string(),
    };
    Ok(PkiSettings {
        public_url,
        organization: cfg.file.pki.organization.clone(),
        country: cfg.file.pki.country.clone(),
        profiles: Profiles::load(dir.as_deref())?,
        party_anchors,
    })
}

/// What the domain works with: the store, key custody, the PKI, the PIN
/// hasher and its settings, the payment policy, the clock. `App::open`
/// builds it from the configuration; domain code never reads `Config`.
/// Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub clock: SharedClock,
    pub store: Store,
    pub custody: Arc<dyn Custody>,
    pub pki: Arc<Pki>,
    pub pins: Arc<PinHasher>,
    pub policy: Arc<Policy>,
    /// Parsed party and device keys, by fingerprint.
    pub keys: Arc<crate::keycache::KeyCache>,
    /// Refusals of unauthenticated callers, counted until the next flush.
    pub refusals: Arc<crate::audit::refusals::RefusalLog>,
    /// Per-source activation misses and decoys.
    pub activation: Arc<crate::subscriber::activation::ActivationGuard>,
    /// The OCSP responder and its pre-signed answers.
    pub ocsp: Arc<crate::pki::ocsp::Responder>,
    /// The relay's settings, metrics and wake-up bell.
    pub relay: Arc<crate::relay::Relay>,
    /// Where new subscriber keys go (`hsm.key_storage`).
    pub key_storage: crate::config::KeyStorage,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("store", &self.store)
            .field("custody", &self.custody)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Builds the services over an opened store and custodian.
    pub fn build(
        cfg: &Config,
        clock: SharedClock,
        store: Store,
        custody: Arc<dyn Custody>,
    ) -> Result<Services, AppError> {
        let pki = Pki::load(&store, custody.clone(), pki_settings(cfg)?)?;
        let pins =
            PinHasher::new(&cfg.file.pin, pki.keys.pin_pepper.clone()).map_err(AppError::Setup)?;
        let policy = Policy::from_config(&cfg.file.policy).map_err(AppError::Setup)?;
        let ocsp = crate::pki::ocsp::Responder::new(
            &pki,
            time::Duration::seconds(
                i64::try_from(cfg.file.pki.ocsp_next_update_seconds.max(60)).unwrap_or(3600),
            ),
            match cfg.file.pki.ocsp_nonce.as_str() {
                "echo" => crate::pki::ocsp::NoncePolicy::Echo,
                _ => crate::pki::ocsp::NoncePolicy::Ignore,
            },
        )?;
        let relay = crate::relay::RelaySettings::from_config(
            &cfg.file.relay,
            &cfg.file.pki.organization,
            &cfg.file.server.listen,
        )
        .map_err(AppError::Setup)?;
        let relay = crate::relay::Relay::new(relay).map_err(|e| AppError::Setup(e.to_string()))?;
        let key_storage = cfg.file.hsm.key_storage;
        if key_storage == crate::config::KeyStorage::Wrapped
            && store.read(crate::store::wrapped::current_kek)?.is_none()
        {
            return Err(AppError::Setup(
                "hsm.key_storage is \"wrapped\" but the database records no key-encryption key; \
                 run `tmcs init` (it creates one with the token's SO PIN)"
                    .into(),
            ));
        }
        Ok(Services {
            key_storage,
            relay: Arc::new(relay),
            ocsp: Arc::new(ocsp),
            clock,
            store,
            custody,
            pki: Arc::new(pki),
            pins: Arc::new(pins),
            policy: Arc::new(policy),
            keys: Arc::new(crate::keycache::KeyCache::new(10_000)),
            refusals: Arc::default(),
            activation: Arc::new(
                crate::subscriber::activation::ActivationGuard::new()
                    .map_err(|e| AppError::Setup(e.to_string()))?,
            ),
        })
    }
}

/// The opened service: its configuration, the domain services, the HSM
/// handle (metrics, attributes) and the metrics registry. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub cfg: Arc<Config>,
    pub svc: Services,
    pub hsm: Hsm,
    pub registry: prometheus::Registry,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("data_dir", &self.cfg.data_dir)
            .field("svc", &self.svc)
            .field("hsm", &self.hsm)
            .finish()
    }
}

impl App {
    /// Opens an initialised installation. Refuses a database whose schema is
    /// behind (run `tmcs migrate`) or a PKI that was never created (`tmcs init`).
    pub fn open(cfg: Config, clock: SharedClock) -> Result<App, AppError> {
        if let Some(path) = cfg.database_url.strip_prefix("sqlite://") {
            if !std::path::Path::new(path).exists() {
                return Err(AppError::Setup(format!(
                    "no database at {path}: run `tmcs init` first (data dir {})",
                    cfg.data_dir.display()
                )));
            }
        }
        let store = Store::open(&store_settings(&cfg))?;
        if store.applied_migrations()? == 0 {
            return Err(AppError::Setup(
                "the database is empty: run `tmcs init` first".into(),
            ));
        }
        if store.has_pending_migrations()? {
            return Err(AppError::Setup(
                "the database schema is behind this binary; run `tmcs migrate`".into(),
            ));
        }
        let registry = prometheus::Registry::new();
        let hsm_metrics = HsmMetrics::new().map_err(|e| AppError::Setup(e.to_string()))?;
        hsm_metrics
            .register(&registry)
            .map_err(|e| AppError::Setup(e.to_string()))?;
        let hsm = Hsm::open(&hsm_settings(&cfg, hsm_pin(&cfg)?), hsm_metrics)?;
        let svc = Services::build(&cfg, clock, store, Arc::new(hsm.clone()))?;
        for h in [&svc.pins.argon2_seconds, &svc.pins.argon2_wait_seconds] {
            registry
                .register(Box::new(h.clone()))
                .map_err(|e| AppError::Setup(e.to_string()))?;
        }
        registry
            .register(Box::new(svc.activation.attempts.clone()))
            .map_err(|e| AppError::Setup(e.to_string()))?;
        svc.relay
            .metrics
            .register(&registry)
            .map_err(|e| AppError::Setup(e.to_string()))?;
        for c in [&svc.ocsp.signed, &svc.ocsp.served_cached] {
            registry
                .register(Box::new(c.clone()))
                .map_err(|e| AppError::Setup(e.to_string()))?;
        }
        Ok(App {
            cfg: Arc::new(cfg),
            svc,
            hsm,
            registry,
        })
    }
}
