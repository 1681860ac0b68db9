//! Test environments on real parts: a SoftHSM2 token per test (in the
//! shared test token directory), SQLite in a temp dir or a fresh database in
//! the throwaway PostgreSQL cluster, and a real HTTPS server on a free port.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use tmcs::app::App;
use tmcs::clock::{OffsetClock, SharedClock};
use tmcs::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

static SOFTHSM_SETUP: Once = Once::new();

/// The SoftHSM2 config every test in this process shares (cargo sets
/// SOFTHSM2_CONF from .cargo/config.toml); created on first use.
pub fn softhsm_conf() -> PathBuf {
    let conf = PathBuf::from(
        std::env::var("SOFTHSM2_CONF").expect("SOFTHSM2_CONF is set by .cargo/config.toml"),
    );
    SOFTHSM_SETUP.call_once(|| {
        tmcs::hsm::softhsm::write_conf(&conf).expect("write SoftHSM2 config");
        let so = conf.with_file_name("so.pin");
        if !so.exists() {
            tmcs::fsutil::write_if_changed(&so, b"test-so-pin-0000\n", 0o600).unwrap();
        }
    });
    conf
}

pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    openssl::rand::rand_bytes(&mut b).unwrap();
    format!("{prefix}{}", hex::encode(b))
}

/// A fresh database in the throwaway cluster, or `None` when there is none
/// (then the PostgreSQL variant of a test says so and fails in CI).
pub fn postgres_database() -> Option<String> {
    let host = std::env::var("PGHOST").ok()?;
    let port = std::env::var("PGPORT").unwrap_or_else(|_| "5432".into());
    let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into());
    let pass = std::env::var("PGPASSWORD").unwrap_or_default();
    let base = format!("postgres://{user}:{pass}@{host}:{port}");
    let name = unique("tmcs_t_");
    use diesel::{Connection, RunQueryDsl};
    let mut c = diesel::PgConnection::establish(&format!("{base}/postgres")).ok()?;
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .ok()?;
    Some(format!("{base}/{name}"))
}

/// Whether the PostgreSQL variant can run; panics when CI requires it.
pub fn postgres_or_skip(test: &str) -> Option<String> {
    match postgres_database() {
        Some(url) => Some(url),
        None if std::env::var("TMCS_TEST_PG").as_deref() == Ok("required") => {
            panic!("{test}: PostgreSQL is required (TMCS_TEST_PG=required) but unreachable")
        }
        None => {
            eprintln!(
                "SKIPPED {test} on PostgreSQL: no cluster (PGHOST unset); `make test` provides one"
            );
            None
        }
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub cfg: Config,
    pub clock: Arc<OffsetClock>,
}

impl Env {
    /// `None` only for PostgreSQL outside `make test`.
    pub fn new(db: Db, test: &str) -> Option<Env> {
        Self::with(db, test, &[])
    }

    pub fn with(db: Db, test: &str, extra: &[(&str, &str)]) -> Option<Env> {
        let conf = softhsm_conf();
        let dir = tempfile::tempdir().unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("TMCS_HSM__TOKEN_LABEL".into(), unique("t-")),
            ("TMCS_HSM__SOFTHSM_CONF".into(), conf.display().to_string()),
            ("TMCS_SERVER__LISTEN".into(), "127.0.0.1:0".into()),
            ("TMCS_PKI__HTTP_LISTEN".into(), "127.0.0.1:0".into()),
            ("TMCS_SERVER__WORKERS".into(), "2".into()),
            // Fast argon2 in tests; the benchmark uses the real defaults.
            ("TMCS_PIN__ARGON2_MEMORY_KIB".into(), "1024".into()),
            ("TMCS_PIN__ARGON2_ITERATIONS".into(), "1".into()),
        ];
        if db == Db::Postgres {
            env.push(("TMCS_DATABASE__URL".into(), postgres_or_skip(test)?));
        }
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        let cfg = Config::load(None, dir.path(), env).unwrap();
        Some(Env {
            dir,
            cfg,
            clock: Arc::new(OffsetClock::new()),
        })
    }

    pub fn now(&self) -> time::OffsetDateTime {
        tmcs::clock::Clock::now(self.clock.as_ref())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn init(&self) -> tmcs::init::InitReport {
        tmcs::init::init(&self.cfg, self.clock.as_ref()).unwrap()
    }

    pub fn app(&self) -> App {
        let clock: SharedClock = self.clock.clone();
        App::open(self.cfg.clone(), clock).unwrap()
    }

    pub fn ca(&self) -> PathBuf {
        self.cfg.ca_pem.clone()
    }

    pub fn client_files(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.cfg.clients_dir.join(format!("{name}.crt")),
            self.cfg.clients_dir.join(format!("{name}.key")),
        )
    }
}

/// A running server and clients for it.
pub struct Served {
    pub base: String,
    /// `http://127.0.0.1:<port>` of the plain-HTTP PKI listener.
    #[allow(dead_code)] // used by the PKI suites
    pub pki_base: String,
    pki_handle: actix_web::dev::ServerHandle,
    #[allow(dead_code)] // used by the lifecycle suites
    pub app: App,
    pub handle: actix_web::dev::ServerHandle,
    ca: PathBuf,
    clients_dir: PathBuf,
}

impl Served {
    /// Starts the service on the current actix system.
    pub fn start(env: &Env) -> Served {
        let app = env.app();
        let bound = tmcs::api::bind(app.clone()).unwrap();
        let addr = bound.addrs[0];
        let handle = bound.server.handle();
        actix_web::rt::spawn(bound.server);
        let pki = bound.pki.expect("the plain-HTTP PKI listener");
        let pki_handle = pki.server.handle();
        let pki_base = format!("http://127.0.0.1:{}", pki.addrs[0].port());
        actix_web::rt::spawn(pki.server);
        Served {
            pki_base,
            pki_handle,
            base: format!("https://localhost:{}", addr.port()),
            app,
            handle,
            ca: env.ca(),
            clients_dir: env.cfg.clients_dir.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn anonymous(&self) -> awc::Client {
        tmcs_client::https::https_client(&self.ca, None).unwrap()
    }

    /// A client presenting `<data>/clients/<name>.crt`.
    pub fn as_client(&self, name: &str) -> awc::Client {
        let cert = self.clients_dir.join(format!("{name}.crt"));
        let key = self.clients_dir.join(format!("{name}.key"));
        tmcs_client::https::https_client(&self.ca, Some((&cert, &key))).unwrap()
    }

    pub async fn stop(self) {
        self.pki_handle.stop(false).await;
        self.handle.stop(false).await;
    }
}

/// Reads a response as (status, content-type, JSON body).
pub async fn json_of(
    res: awc::ClientResponse<
        impl futures_util::Stream<
                Item = Result<actix_web::web::Bytes, actix_web::error::PayloadError>,
            > + Unpin,
    >,
) -> (u16, String, serde_json::Value) {
    let mut res = res;
    let status = res.status().as_u16();
    let ct = crate::support::content_type(res.headers());
    let body = res.body().limit(10 << 20).await.unwrap();
    let v = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()))
    };
    (status, ct, v)
}

/// Runs an `openssl` command; returns (success, stdout+stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Declares one test per backend running `$body(Db)`.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$body($crate::support::Db::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$body($crate::support::Db::Postgres)
            }
        }
    };
}

/// Same for async bodies (run on an actix system).
#[macro_export]
macro_rules! on_both_backends_async {
    ($name:ident, $body:ident) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$body($crate::support::Db::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                super::$body($crate::support::Db::Postgres).await
            }
        }
    };
}

/// POST a JSON body; returns (status, content-type, JSON).
pub async fn post_json(
    c: &awc::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, String, serde_json::Value) {
    json_of(c.post(url).send_json(body).await.unwrap()).await
}

/// GET; returns (status, content-type, JSON).
pub async fn get_json(c: &awc::Client, url: &str) -> (u16, String, serde_json::Value) {
    json_of(c.get(url).send().await.unwrap()).await
}

impl Served {
    /// Registers a subscriber as the operator; returns (subscriber_id, activation code).
    pub async fn register_subscriber(&self, msisdn: &str) -> (String, String) {
        let (st, _, b) = post_json(
            &self.as_client("operator"),
            &self.url("/v1/admin/subscribers"),
            &serde_json::json!({ "msisdn": msisdn, "display_name": "Test Person", "kyc_ref": "KYC-1" }),
        )
        .await;
        assert_eq!(st, 201, "{b}");
        (
            b["subscriber_id"].as_str().unwrap().to_string(),
            b["activation_code"].as_str().unwrap().to_string(),
        )
    }

    pub async fn handset(&self, msisdn: &str) -> tmcs_client::Handset {
        let mut res = self
            .anonymous()
            .get(self.url("/pki/transport.pem"))
            .send()
            .await
            .unwrap();
        let pem = res.body().await.unwrap();
        tmcs_client::Handset::new(msisdn, &pem).unwrap()
    }

    /// Registers and activates a subscriber; returns the handset and certificate PEM.
    pub async fn active_subscriber(
        &self,
        msisdn: &str,
        pin: &str,
    ) -> (tmcs_client::Handset, String) {
        let (_, code) = self.register_subscriber(msisdn).await;
        let h = self.handset(msisdn).await;
        let (st, _, b) = post_json(
            &self.anonymous(),
            &self.url("/v1/handset/activate"),
            &h.activation_body(&code, pin).unwrap(),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        (h, b["certificate"].as_str().unwrap().to_string())
    }
}

pub fn random_msisdn() -> String {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).unwrap();
    format!("+49151{:08}", u32::from_le_bytes(b) % 100_000_000)
}

/// The Content-Type of a response ("" when absent).
pub fn content_type(h: &actix_web::http::header::HeaderMap) -> String {
    h.get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}
