//! `tmcs init`: idempotent bootstrap (CONTRACT §1).
//!
//! Creates, when missing: the SoftHSM2 token and its PINs, the database
//! schema, the server's HSM keys, the CA hierarchy, the server keys'
//! certificates, the TLS server certificate, the bootstrap client
//! certificates, and the files under the data dir. Everything created is an
//! audit event; a run that finds everything in place changes nothing.

use std::path::Path;

use std::sync::Arc;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use secrecy::{ExposeSecret, SecretString};

use crate::app::{self, io_err, AppError};
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::clock::Clock;
use crate::config::{Config, KeyStorage};
use crate::fsutil;
use crate::hsm::{softhsm, Custody, EcUsage, Hsm, HsmMetrics, KeyId};
use crate::pki::{self, names, CertInfo, CertSpec, LoadedCert, PkiSettings};
use crate::states::{CertStatus, Role};
use crate::store::{certs, clients, keys, wrapped, Store};

/// `tmcs init` renews server and bootstrap-client certificates this close to
/// their notAfter (the CA certificates are long-lived and renewed by hand).
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// The bootstrap mTLS clients: file name → role.
pub const BOOTSTRAP_CLIENTS: &[(&str, Role)] = &[
    ("operator", Role::Operator),
    ("auditor", Role::Auditor),
    ("fsp-demo", Role::Fsp),
    ("gateway-demo", Role::Gateway),
];

#[derive(Debug, Clone, Copy)]
enum KeyKind {
    EcSign,
    EcDerive,
    Hmac,
}

impl KeyKind {
    fn as_str(self) -> &'static str {
        match self {
            KeyKind::EcSign => "ec-p256-sign",
            KeyKind::EcDerive => "ec-p256-derive",
            KeyKind::Hmac => "hmac-sha256",
        }
    }
}

const SERVER_KEYS: &[(&str, KeyKind)] = &[
    (names::ROOT_CA, KeyKind::EcSign),
    (names::ISSUING_CA, KeyKind::EcSign),
    (names::TRANSPORT, KeyKind::EcDerive),
    (names::DISPLAY, KeyKind::EcSign),
    (names::AUDIT, KeyKind::EcSign),
    (names::OCSP, KeyKind::EcSign),
    (names::PIN_PEPPER, KeyKind::Hmac),
];

/// What one init run did.
#[derive(Debug, Default)]
pub struct InitReport {
    pub created: Vec<String>,
}

struct Record<'a> {
    name: &'a str,
    issuer: &'a str,
    owner: Option<&'a str>,
    key_id: Option<&'a KeyId>,
    extra: Vec<NewEvent>,
    client: Option<clients::ClientRow>,
}

impl<'a> Record<'a> {
    fn new(name: &'a str, issuer: &'a str) -> Self {
        Record {
            name,
            issuer,
            owner: None,
            key_id: None,
            extra: Vec::new(),
            client: None,
        }
    }
    fn key(self, key_id: &'a KeyId) -> Self {
        Record {
            key_id: Some(key_id),
            ..self
        }
    }
}

struct Ctx<'a> {
    cfg: &'a Config,
    clock: &'a dyn Clock,
    store: Store,
    hsm: Arc<dyn Custody>,
    settings: PkiSettings,
    report: InitReport,
}

pub fn init(cfg: &Config, clock: &dyn Clock) -> Result<InitReport, AppError> {
    let mut report = InitReport::default();
    fsutil::ensure_dir(&cfg.data_dir, 0o700).map_err(io_err(&cfg.data_dir))?;

    let pin = user_pin(cfg, &mut report)?;
    if let Some(conf) = &cfg.softhsm_conf {
        let tokens = softhsm::write_conf(conf)?;
        let so_pin_path = conf.with_file_name("so.pin");
        let so_pin = secret_file(&so_pin_path, &mut report)?;
        let created = softhsm::ensure_token(
            &cfg.file.hsm.module,
            Some(conf),
            &cfg.file.hsm.token_label,
            &so_pin,
            &pin,
        )?;
        if created {
            report.created.push(format!(
                "SoftHSM2 token {:?} in {}",
                cfg.file.hsm.token_label,
                tokens.display()
            ));
        }
    }

    let store = Store::open(&app::store_settings(cfg))?;
    for m in store.migrate()? {
        report.created.push(format!("database migration {m}"));
    }
    // The KEK needs an SO session, so it comes before the user login.
    if cfg.file.hsm.key_storage == KeyStorage::Wrapped
        && store.read(wrapped::current_kek)?.is_none()
    {
        let so_pin = crate::keyring::so_pin(cfg)?;
        let k = crate::keyring::create_kek(cfg, &store, clock, &so_pin)?;
        report.created.push(format!(
            "HSM key-encryption key v{} (AES-256, trusted, wrap/unwrap only)",
            k.version
        ));
    }
    let hsm = Hsm::open(
        &app::hsm_settings(cfg, pin),
        HsmMetrics::new().map_err(|e| AppError::Setup(e.to_string()))?,
    )?;
    for k in store.read(wrapped::all_keks)? {
        let id = KeyId::from_hex(&k.key_id)?;
        if !hsm.key_exists(&id)? {
            return Err(AppError::Setup(format!(
                "key-encryption key v{} ({id}) is recorded in the database but missing from token {:?}; \
                 the keys wrapped under it cannot be used",
                k.version, cfg.file.hsm.token_label
            )));
        }
    }
    bootstrap(cfg, clock, store, Arc::new(hsm), report)
}

/// Everything after the token and the schema: the server keys in the
/// custodian, the CA hierarchy, the server and bootstrap-client
/// certificates and the public files. Idempotent. (Unit tests run it on a
/// software custodian.)
pub fn bootstrap(
    cfg: &Config,
    clock: &dyn Clock,
    store: Store,
    custody: Arc<dyn Custody>,
    report: InitReport,
) -> Result<InitReport, AppError> {
    let mut ctx = Ctx {
        cfg,
        clock,
        store,
        hsm: custody,
        settings: app::pki_settings(cfg)?,
        report,
    };
    for (name, kind) in SERVER_KEYS {
        ctx.ensure_key(name, *kind)?;
    }
    ctx.ensure_ca_hierarchy()?;
    ctx.ensure_server_key_certs()?;
    ctx.ensure_tls_server()?;
    ctx.ensure_relay_client()?;
    for (name, role) in BOOTSTRAP_CLIENTS {
        ctx.ensure_client(name, *role)?;
    }
    ctx.write_public_files()?;

    if !ctx.report.created.is_empty() {
        let pki = pki::Pki::load(&ctx.store, ctx.hsm.clone(), ctx.settings.clone())?;
        let now = ctx.clock.now();
        let created = ctx.report.created.len();
        ctx.store.write(|c| {
            audit::append(
                c,
                now,
                NewEvent::of(
                    &Actor::System,
                    None,
                    AuditEvent::SystemInitialized {
                        items_created: created,
                        data_dir: cfg.data_dir.display().to_string(),
                    },
                ),
            )
        })?;
        audit::make_checkpoint(
            &ctx.store,
            ctx.hsm.as_ref(),
            &pki.keys.audit,
            ctx.clock.now(),
        )?;
    }
    Ok(ctx.report)
}

/// The user PIN: configured, or read from / generated into the PIN file
/// (generation only for SoftHSM2, whose token we create ourselves).
fn user_pin(cfg: &Config, report: &mut InitReport) -> Result<SecretString, AppError> {
    if let Some(pin) = &cfg.file.hsm.pin {
        return Ok(pin.clone());
    }
    if cfg.hsm_pin_file.exists() || cfg.softhsm_conf.is_none() {
        return app::hsm_pin(cfg);
    }
    secret_file(&cfg.hsm_pin_file, report)
}

fn secret_file(path: &Path, report: &mut InitReport) -> Result<SecretString, AppError> {
    if path.exists() {
        return fsutil::read_secret_file(path).map_err(io_err(path));
    }
    let secret = fsutil::random_token(32).map_err(|e| AppError::Setup(e.to_string()))?;
    let line = zeroize::Zeroizing::new(format!("{}\n", secret.expose_secret()));
    fsutil::write_if_changed(path, line.as_bytes(), 0o600).map_err(io_err(path))?;
    report
        .created
        .push(format!("secret {} (mode 0600)", path.display()));
    Ok(secret)
}

impl Ctx<'_> {
    fn event(&self, subject: String, event: AuditEvent) -> NewEvent {
        NewEvent::of(&Actor::System, subject, event)
    }

    fn ensure_key(&mut self, name: &str, kind: KeyKind) -> Result<KeyId, AppError> {
        if let Some(row) = self.store.read(|c| keys::get(c, name))? {
            let id = KeyId::from_hex(&row.key_id)?;
            if !self.hsm.key_exists(&id)? {
                return Err(AppError::Setup(format!(
                    "server key {name} ({id}) is recorded in the database but missing from token {:?}; \
                     refusing to replace it silently",
                    self.cfg.file.hsm.token_label
                )));
            }
            return Ok(id);
        }
        let label = format!("tmcs:{name}");
        let (id, spki) = match kind {
            KeyKind::EcSign => {
                let k = self.hsm.generate_ec_p256(&label, EcUsage::Sign)?;
                (k.id, Some(k.spki))
            }
            KeyKind::EcDerive => {
                let k = self.hsm.generate_ec_p256(&label, EcUsage::Derive)?;
                (k.id, Some(k.spki))
            }
            KeyKind::Hmac => (self.hsm.generate_hmac_key(&label)?, None),
        };
        let now = self.clock.now();
        let row = keys::ServerKeyRow {
            name: name.to_string(),
            key_id: id.to_hex(),
            kind: kind.as_str().to_string(),
            public_spki_hex: spki.as_ref().map(hex::encode),
            created_at: now.unix_timestamp(),
        };
        let ev = self.event(
            format!("server-key:{name}"),
            AuditEvent::ServerKeyGenerated {
                key: name.to_string(),
                key_id: id.to_hex(),
                kind: kind.as_str(),
                token: self.cfg.file.hsm.token_label.clone(),
                sensitive: true,
                extractable: false,
            },
        );
        self.store.write(|c| {
            keys::insert(c, &row)?;
            audit::append(c, now, ev)
        })?;
        self.report
            .created
            .push(format!("HSM key {name} ({})", kind.as_str()));
        Ok(id)
    }

    fn key(&self, name: &str) -> Result<KeyId, AppError> {
        let row = self
            .store
            .read(|c| keys::get(c, name))?
            .ok_or_else(|| AppError::Setup(format!("key {name} missing")))?;
        Ok(KeyId::from_hex(&row.key_id)?)
    }

    fn current(&self, name: &str) -> Result<Option<LoadedCert>, AppError> {
        match self.store.read(|c| certs::current(c, name))? {
            Some(row) => Ok(Some(LoadedCert::from_row(&row)?)),
            None => Ok(None),
        }
    }

    /// Records a newly issued certificate as current `r.name`, with its event.
    fn record(&mut self, info: &CertInfo, r: Record<'_>) -> Result<(), AppError> {
        let Record {
            name,
            issuer,
            owner,
            key_id,
            extra,
            client,
        } = r;
        let now = self.clock.now();
        let row = info.to_row(
            issuer,
            name,
            owner,
            key_id.map(KeyId::to_hex).as_deref(),
            CertStatus::Active,
            now,
        );
        let mut events = vec![self.event(
            info.serial_hex.clone(),
            AuditEvent::ServerCertIssued {
                purpose: name.to_string(),
                issuer: issuer.to_string(),
                subject_cn: info.common_name.clone(),
                fingerprint: info.fingerprint.clone(),
                not_after: crate::clock::rfc3339_seconds(info.not_after),
            },
        )];
        events.extend(extra);
        self.store.write(|c| {
            certs::insert(c, &row)?;
            certs::set_current(c, name, &info.serial_hex)?;
            if let Some(client) = &client {
                clients::insert(c, client)?;
            }
            audit::append_all(c, now, events)
        })?;
        self.report
            .created
            .push(format!("certificate {name} (serial {})", info.serial_hex));
        Ok(())
    }

    fn spec<'p>(&'p self, profile: &'p pki::Profile, cn: &str, sans: Vec<String>) -> CertSpec<'p> {
        CertSpec {
            profile,
            subject: pki::Subject {
                common_name: cn.to_string(),
                organization: self.settings.organization.clone(),
                organizational_unit: profile.organizational_unit.clone(),
                country: self.settings.country.clone(),
            },
            sans,
            now: self.clock.now(),
            not_after_cap: None,
            public_url: &self.settings.public_url,
        }
    }

    fn ensure_ca_hierarchy(&mut self) -> Result<(), AppError> {
        let root_key = self.key(names::ROOT_CA)?;
        let root = match self.current(names::ROOT_CA)? {
            Some(r) => r,
            None => {
                let point = self.hsm.public_point(&root_key)?;
                let profile = self.settings.profiles.get("root-ca")?.clone();
                let cn = self.cfg.file.pki.root_common_name.clone();
                let info = pki::self_signed_root(
                    self.hsm.as_ref(),
                    &root_key,
                    point,
                    self.spec(&profile, &cn, vec![]),
                )?;
                self.record(&info, Record::new(names::ROOT_CA, "self").key(&root_key))?;
                LoadedCert::from_info(info)?
            }
        };
        if self.current(names::ISSUING_CA)?.is_none() {
            let key = self.key(names::ISSUING_CA)?;
            let point = self.hsm.public_point(&key)?;
            let profile = self.settings.profiles.get("issuing-ca")?.clone();
            let cn = self.cfg.file.pki.issuing_common_name.clone();
            let info = pki::issue_by(
                self.hsm.as_ref(),
                &root,
                &root_key,
                self.spec(&profile, &cn, vec![]),
                &pki::EcPublicKey(point),
            )?;
            self.record(&info, Record::new(names::ISSUING_CA, "root").key(&key))?;
        }
        Ok(())
    }

    fn issuing(&self) -> Result<(LoadedCert, KeyId), AppError> {
        let ca = self
            .current(names::ISSUING_CA)?
            .ok_or_else(|| AppError::Setup("issuing CA missing".into()))?;
        Ok((ca, self.key(names::ISSUING_CA)?))
    }

    fn ensure_server_key_certs(&mut self) -> Result<(), AppError> {
        let (ca, ca_key) = self.issuing()?;
        for (name, profile, cn) in [
            (names::TRANSPORT, "transport", "tmcs PIN transport key"),
            (names::DISPLAY, "display", "tmcs display signing key"),
            (names::AUDIT, "audit", "tmcs audit checkpoint key"),
            (names::OCSP, "ocsp", "tmcs OCSP responder"),
        ] {
            if self.current(name)?.is_some_and(|c| self.fresh(&c)) {
                continue;
            }
            let key = self.key(name)?;
            let point = self.hsm.public_point(&key)?;
            let profile = self.settings.profiles.get(profile)?.clone();
            let info = pki::issue_by(
                self.hsm.as_ref(),
                &ca,
                &ca_key,
                self.spec(&profile, cn, vec![]),
                &pki::EcPublicKey(point),
            )?;
            self.record(&info, Record::new(name, "issuing").key(&key))?;
        }
        Ok(())
    }

    /// Issues a certificate for a fresh file key and writes both files.
    fn issue_file_key(
        &self,
        profile: &str,
        cn: &str,
        sans: Vec<String>,
        cert_path: &Path,
        key_path: &Path,
        chain: bool,
    ) -> Result<CertInfo, AppError> {
        let (ca, ca_key) = self.issuing()?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AppError::Setup(format!("key generation: {e}")))?;
        let profile = self.settings.profiles.get(profile)?.clone();
        let info = pki::issue_by(
            self.hsm.as_ref(),
            &ca,
            &ca_key,
            self.spec(&profile, cn, sans),
            &key,
        )?;
        let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
        fsutil::write_if_changed(key_path, key_pem.as_bytes(), 0o600).map_err(io_err(key_path))?;
        let cert_pem = if chain {
            format!("{}{}", info.pem, ca.info.pem)
        } else {
            info.pem.clone()
        };
        fsutil::write_if_changed(cert_path, cert_pem.as_bytes(), 0o644)
            .map_err(io_err(cert_path))?;
        Ok(info)
    }

    /// Whether `cert` is good for longer than the renewal window; a re-run of
    /// `tmcs init` renews end-entity certificates that are not.
    fn fresh(&self, cert: &LoadedCert) -> bool {
        cert.info.not_after - self.clock.now() > time::Duration::days(RENEW_BEFORE_DAYS)
    }

    /// Whether `key_path` holds the private key of `cert`.
    fn key_matches(cert: &LoadedCert, key_path: &Path) -> bool {
        let Ok(pem) = std::fs::read(key_path) else {
            return false;
        };
        openssl::pkey::PKey::private_key_from_pem(&pem)
            .and_then(|k| k.public_key_to_der())
            .map(|spki| spki == cert.info.spki_der)
            .unwrap_or(false)
    }

    fn ensure_tls_server(&mut self) -> Result<(), AppError> {
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        for n in &self.cfg.file.server.tls_names {
            if !sans.contains(n) {
                sans.push(n.clone());
            }
        }
        let (cert, key) = (self.cfg.tls_cert.clone(), self.cfg.tls_key.clone());
        self.ensure_chained_file_cert(
            names::TLS_SERVER,
            "tls-server",
            "localhost",
            sans,
            &cert,
            &key,
            None,
        )
    }

    /// The relay's client certificate: how tmcs authenticates to FSPs,
    /// banks and merchants (CONTRACT §11). Not an mTLS client of tmcs
    /// itself, so it is not registered as one.
    fn ensure_relay_client(&mut self) -> Result<(), AppError> {
        let (cert, key) = (self.cfg.relay_cert.clone(), self.cfg.relay_key.clone());
        self.ensure_chained_file_cert(
            names::RELAY_CLIENT,
            "tls-client",
            "tmcs-relay",
            vec![],
            &cert,
            &key,
            Some("tmcs-relay"),
        )
    }

    /// A certificate for a file key, written with the issuing CA after it;
    /// kept while its key file matches and it is fresh, else issued anew.
    #[allow(clippy::too_many_arguments)]
    fn ensure_chained_file_cert(
        &mut self,
        name: &str,
        profile: &str,
        cn: &str,
        sans: Vec<String>,
        cert_path: &Path,
        key_path: &Path,
        owner: Option<&str>,
    ) -> Result<(), AppError> {
        if let Some(cur) = self.current(name)? {
            if Self::key_matches(&cur, key_path) && self.fresh(&cur) {
                let (ca, _) = self.issuing()?;
                let want = format!("{}{}", cur.info.pem, ca.info.pem);
                fsutil::write_if_changed(cert_path, want.as_bytes(), 0o644)
                    .map_err(io_err(cert_path))?;
                return Ok(());
            }
        }
        fsutil::ensure_dir(cert_path.parent().unwrap_or(&self.cfg.data_dir), 0o700)
            .map_err(io_err(cert_path))?;
        let info = self.issue_file_key(profile, cn, sans, cert_path, key_path, true)?;
        self.record(
            &info,
            Record {
                owner,
                ..Record::new(name, "issuing")
            },
        )
    }

    fn ensure_client(&mut self, name: &str, role: Role) -> Result<(), AppError> {
        let dir = self.cfg.clients_dir.clone();
        fsutil::ensure_dir(&dir, 0o700).map_err(io_err(&dir))?;
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        let current_name = format!("client:{name}");
        let previous = self.current(&current_name)?;
        if let Some(cur) = &previous {
            if Self::key_matches(cur, &key_path) && self.fresh(cur) {
                fsutil::write_if_changed(&cert_path, cur.info.pem.as_bytes(), 0o644)
                    .map_err(io_err(&cert_path))?;
                return Ok(());
            }
        }
        let info = self.issue_file_key("tls-client", name, vec![], &cert_path, &key_path, false)?;
        let now = self.clock.now();
        let client = clients::ClientRow {
            fingerprint: info.fingerprint.clone(),
            role,
            name: name.to_string(),
            party_id: None,
            serial: Some(info.serial_hex.clone()),
            status: CertStatus::Active,
            created_at: now.unix_timestamp(),
        };
        let registered = self.event(
            info.serial_hex.clone(),
            AuditEvent::ClientRegistered {
                client: Some(name.to_string()),
                role,
                fingerprint: info.fingerprint.clone(),
            },
        );
        self.record(
            &info,
            Record {
                owner: Some(name),
                extra: vec![registered],
                client: Some(client),
                ..Record::new(&current_name, "issuing")
            },
        )?;
        if let Some(old) = previous {
            // The old key file is gone: its certificate must not keep working.
            let at = now.unix_timestamp();
            let ev = self.event(
                old.info.serial_hex.clone(),
                AuditEvent::CertSuperseded {
                    reason: "superseded",
                    purpose: current_name.clone(),
                    superseded_by: info.serial_hex.clone(),
                },
            );
            self.store.write(|c| -> Result<(), AppError> {
                clients::set_status_by_fingerprint(c, &old.info.fingerprint, CertStatus::Revoked)?;
                // An earlier revocation (say keyCompromise) keeps its reason.
                let already = certs::lock(c, &old.info.serial_hex)?
                    .is_some_and(|r| r.status == CertStatus::Revoked);
                if !already {
                    certs::set_status(
                        c,
                        &old.info.serial_hex,
                        CertStatus::Revoked,
                        Some("superseded"),
                        Some(at),
                    )?;
                    audit::append(c, now, ev)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn write_public_files(&mut self) -> Result<(), AppError> {
        let (ca, _) = self.issuing()?;
        let root = self
            .current(names::ROOT_CA)?
            .ok_or_else(|| AppError::Setup("root CA missing".into()))?;
        let bundle = format!("{}{}", root.info.pem, ca.info.pem);
        let ca_pem = self.cfg.ca_pem.clone();
        if fsutil::write_if_changed(&ca_pem, bundle.as_bytes(), 0o644).map_err(io_err(&ca_pem))? {
            self.report.created.push(format!("{}", ca_pem.display()));
        }
        if let Some(audit_cert) = self.current(names::AUDIT)? {
            let p = self.cfg.data_dir.join("audit.pem");
            if fsutil::write_if_changed(&p, audit_cert.info.pem.as_bytes(), 0o644)
                .map_err(io_err(&p))?
            {
                self.report.created.push(format!("{}", p.display()));
            }
        }
        Ok(())
    }
}
