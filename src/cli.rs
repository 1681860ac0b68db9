//! The `tmcs` command line (CONTRACT §1). Exit status: 0 ok, 1 failure,
//! 2 usage or configuration error; errors are one `error: …` line on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::{self, App, AppError};
use crate::audit;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{self, Config};
use crate::hsm;
use crate::relay::Transport;
use crate::store::{self, audit_rows, Store};

#[derive(Debug, Parser)]
#[command(
    name = "tmcs",
    version,
    about = "Trusted mobile certificate server: delegated iMS signing with keys in a PKCS#11 HSM"
)]
pub struct Cli {
    /// Configuration file (default: ./tmcs.toml when present, else the embedded defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (database, SoftHSM2 token, certificates, keys).
    #[arg(long, global = true, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the token, HSM keys, database, CA hierarchy, TLS and client certificates (idempotent).
    Init,
    /// Run the HTTPS service on server.listen.
    Serve,
    #[command(flatten)]
    Tool(ToolCommand),
    /// Apply pending database migrations.
    Migrate,
    /// Export or verify the audit log; the auditor's report and timelines.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Key custody: key-encryption keys and wrapped subscriber keys.
    Hsm {
        #[command(subcommand)]
        command: HsmCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum HsmCommand {
    /// Key-encryption keys by version and how many subscriber keys each wraps.
    Status,
    /// Rotate the key-encryption key: create a new trusted KEK (SO PIN) and wrap every
    /// subscriber key under it, in batches; resumes an interrupted rotation. Audited.
    /// Safe while `tmcs serve` runs: keys sign under their old KEK until rewrapped.
    Rewrap {
        /// Keys per transaction (and per audit event).
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// Move token subscriber keys to wrapped storage. A token key was made never
    /// extractable, so each is replaced by a new wrapped key with a renewed certificate
    /// (the old one revoked as superseded); subscribers that are not active are skipped.
    MigrateKeys {
        /// Subscribers read per batch.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
}

/// `demo` (CONTRACT §1) and `bench`: commands of `tmcs` that the sibling
/// binary `tmcs-tools` carries out, so that the service crate has no HTTP
/// client. `tmcs-tools` parses the same definitions.
#[derive(Debug, Clone, Subcommand)]
pub enum ToolCommand {
    /// Self-contained end-to-end run in a temporary data dir: init, serve in-process,
    /// merchant → FSP → tmcs → handset → tmcs → FSP → bank → merchant notice → receipt,
    /// with simulated FSP, merchant and bank; exit 0 only when the payment settled and
    /// every signature verifies.
    Demo(DemoArgs),
    /// Benchmark in a temporary data dir (database from database.url when set); prints
    /// one JSON line. `--scenario signing`: concurrent handsets against the real HTTPS
    /// service, then the in-process crypto floor. `--scenario ocsp`: the plain-HTTP
    /// OCSP responder against `openssl ocsp -index` on an equivalent CA. `--scenario
    /// relay`: payments through the FSP and bank simulators, signed→settled per second
    /// and its p99, beside the authorisations of the same run.
    Bench(BenchArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep the temporary data dir and print its path.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// What to measure: `signing`, `ocsp`, `relay` or `submit`.
    #[arg(long, default_value = "signing", value_parser = ["signing", "ocsp", "relay", "submit"])]
    pub scenario: String,
    /// Length of the timed phase.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Concurrent handsets (each: submit, read, authorise, repeat).
    #[arg(long, default_value_t = 16)]
    pub handsets: usize,
    /// Length of the crypto-floor loop.
    #[arg(long, default_value_t = 8)]
    pub floor_seconds: u64,
    /// With `--scenario signing`: first seed this many active subscribers
    /// (real wrapped keys and certificates, in batches), then draw every
    /// payment's payer at random from them; prints the `population` line.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub population: usize,
}

impl ToolCommand {
    /// The subcommand's name and its arguments, as `tmcs-tools` takes them.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            ToolCommand::Demo(a) => {
                let mut v = vec!["demo".to_string()];
                if a.keep {
                    v.push("--keep".into());
                }
                v
            }
            ToolCommand::Bench(a) => vec![
                "bench".into(),
                "--scenario".into(),
                a.scenario.clone(),
                "--seconds".into(),
                a.seconds.to_string(),
                "--handsets".into(),
                a.handsets.to_string(),
                "--floor-seconds".into(),
                a.floor_seconds.to_string(),
                "--population".into(),
                a.population.to_string(),
            ],
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ToolCommand::Demo(_) => "demo",
            ToolCommand::Bench(_) => "bench",
        }
    }
}

/// The binary that carries out `tmcs demo` and `tmcs bench`, next to `tmcs`.
pub const TOOLS_BIN: &str = "tmcs-tools";

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write the audit log (events, then signed checkpoints, then signed tree heads) as
    /// JSON lines.
    Export {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Verify the hash chain, the signed checkpoints and the signed tree heads; exit 1
    /// naming the first bad seq.
    Verify {
        /// Verify this export file instead of the database.
        #[arg(long, value_name = "FILE", requires = "cert")]
        file: Option<PathBuf>,
        /// The audit certificate (PEM) that signed the checkpoints (with --file).
        #[arg(long, value_name = "AUDIT_CERT")]
        cert: Option<PathBuf>,
        /// Checkpoints an auditor kept (the JSON of GET /v1/audit/checkpoints, or JSON
        /// lines): the log must still contain what they cover, which also catches a
        /// log cut after its last stored checkpoint.
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
        /// Signed tree heads an auditor kept (GET /v1/audit/sth answers: one, a JSON
        /// array, or JSON lines): each must still match the log's Merkle tree, which
        /// catches a log rewritten together with its stored tree heads.
        #[arg(long = "tree-heads", value_name = "FILE")]
        tree_heads: Option<PathBuf>,
    },
    /// Sign a checkpoint and a tree head (CONTRACT §13) of the current head now.
    Checkpoint,
    /// Write the auditor's report: DIR/index.html, static HTML without scripts.
    ///
    /// The page holds the verification status, each certificate's timeline, the
    /// signatures each subscriber key made and the parties; it needs no network. Exit 1
    /// when the log fails verification (the report, which says so, is still written).
    Report {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only this subscriber (MSISDN or id), certificate serial or party id.
        #[arg(long, value_name = "SUBJECT")]
        subject: Option<String>,
    },
    /// Print one subscriber's, certificate's or party's history as a table, in order.
    Timeline {
        /// An MSISDN, subscriber id, certificate serial or party id.
        #[arg(long, value_name = "SUBJECT")]
        subject: String,
    },
    /// Evidence bundles of single payments (GET /v1/audit/evidence/{request_id}).
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Check a bundle offline: C, the signature, the chain, the OCSP response,
    /// the events, the tree head and the inclusion proofs; exit 1 naming the
    /// first failure.
    Verify {
        /// The bundle (the JSON of GET /v1/audit/evidence/{request_id}).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The CA certificates to trust (PEM, e.g. <data>/ca.pem or /pki/ca.pem).
        #[arg(long, value_name = "CA_PEM")]
        ca: PathBuf,
        /// The audit certificate (PEM, /pki/audit.pem or <data>/audit.pem).
        #[arg(long = "audit-cert", value_name = "AUDIT_CERT")]
        audit_cert: PathBuf,
    },
}

/// A command's failure and its exit status.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    pub fn failed(e: &(dyn std::error::Error + 'static)) -> Failure {
        Failure {
            code: 1,
            message: error_chain(e),
        }
    }
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Self {
        Failure::failed(&e)
    }
}

/// "outer: cause: root cause", skipping causes the outer text already shows.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    msg
}

/// How `tmcs serve` makes the relay's transport (on its actix system):
/// `tmcs-server` passes its HTTPS client, so this library holds none.
pub type TransportFactory = fn(&Config) -> Result<Rc<dyn Transport>, String>;

/// The `tmcs` command line.
pub fn main_with(transport: TransportFactory) -> ExitCode {
    init_openssl();
    match parse::<Cli>("tmcs") {
        Ok(cli) => exit(run(cli, transport)),
        Err(code) => code,
    }
}

/// Initialises OpenSSL before anything else can, without its exit handler.
/// Otherwise libpq initialises it on the first PostgreSQL connection and
/// registers `OPENSSL_cleanup` to run at exit, which frees OpenSSL's tables
/// under a connection pool thread still connecting (SCRAM hashes with
/// OpenSSL): a short command such as `tmcs audit verify` on PostgreSQL then
/// died with SIGSEGV after its work, in about one run of ten. Call first in
/// every `main`.
pub fn init_openssl() {
    openssl::init();
}

/// Parses the command line of `bin`; help and version go to stdout (exit 0),
/// any other error is one `error: …` line (exit 2).
pub fn parse<P: Parser>(bin: &str) -> Result<P, ExitCode> {
    P::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // One line, as every other error (see `--help` for usage).
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("invalid arguments");
        let msg = first.strip_prefix("error: ").unwrap_or(first);
        let _ = writeln!(std::io::stderr(), "error: {msg} (see {bin} --help)");
        ExitCode::from(2)
    })
}

/// The exit status of a command's result; a failure is one `error: …` line.
pub fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "error: {}", f.message.replace('\n', " "));
            ExitCode::from(f.code)
        }
    }
}

pub fn load_config(path: Option<&Path>, data_dir: &Path) -> Result<Config, Failure> {
    load_config_with(path, data_dir, Vec::new())
}

/// Like [`load_config`], with `extra` applied before the process environment.
pub fn load_config_with(
    path: Option<&Path>,
    data_dir: &Path,
    extra: Vec<(String, String)>,
) -> Result<Config, Failure> {
    let default = Path::new("tmcs.toml");
    let path = match path {
        Some(p) => Some(p),
        None if default.exists() => Some(default),
        None => None,
    };
    let mut env = extra;
    env.extend(config::process_env());
    let cfg = Config::load(path, data_dir, env).map_err(|e| Failure::usage(error_chain(&e)))?;
    // Settings other layers interpret are checked here too, so a bad one is
    // a configuration error (exit 2) before anything starts.
    crate::signing::Policy::from_config(&cfg.file.policy)
        .map_err(|e| Failure::usage(format!("invalid config: {e}")))?;
    crate::subscriber::pin::PinHasher::params(&cfg.file.pin)
        .map_err(|e| Failure::usage(format!("invalid config: pin: {e}")))?;
    crate::app::pki_settings(&cfg).map_err(|e| Failure::usage(format!("invalid config: {e}")))?;
    crate::relay::RelaySettings::from_config(
        &cfg.file.relay,
        &cfg.file.pki.organization,
        &cfg.file.server.listen,
    )
    .map_err(|e| Failure::usage(format!("invalid config: {e}")))?;
    Ok(cfg)
}

pub fn init_logging(cfg: &Config, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if cfg.file.server.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn run(cli: Cli, transport: TransportFactory) -> Result<(), Failure> {
    if let Command::Tool(tool) = &cli.command {
        return delegate(cli.config.as_deref(), tool);
    }
    // Offline: no configuration, database or HSM.
    if let Command::Audit {
        command:
            AuditCommand::Evidence {
                command:
                    EvidenceCommand::Verify {
                        file,
                        ca,
                        audit_cert,
                    },
            },
    } = &cli.command
    {
        return verify_evidence(file, ca, audit_cert);
    }
    let cfg = load_config(cli.config.as_deref(), &cli.data_dir)?;
    // Before any thread exists: SoftHSM2 reads SOFTHSM2_CONF in C_Initialize.
    hsm::prepare_process_env(cfg.softhsm_conf.as_deref());
    let clock: SharedClock = Arc::new(SystemClock);
    match cli.command {
        Command::Init => {
            init_logging(&cfg, "warn");
            let report = crate::init::init(&cfg, clock.as_ref())?;
            let mut out = std::io::stdout().lock();
            if report.created.is_empty() {
                let _ = writeln!(
                    out,
                    "tmcs init: everything already in place in {}",
                    cfg.data_dir.display()
                );
            } else {
                let _ = writeln!(out, "tmcs init: created in {}:", cfg.data_dir.display());
                for c in &report.created {
                    let _ = writeln!(out, "  + {c}");
                }
            }
            Ok(())
        }
        Command::Migrate => {
            init_logging(&cfg, "warn");
            let store = Store::open(&app::store_settings(&cfg)).map_err(AppError::from)?;
            let applied = store.migrate().map_err(AppError::from)?;
            if applied.is_empty() {
                println!(
                    "tmcs migrate: schema is up to date ({})",
                    store.backend().name()
                );
            } else {
                for m in applied {
                    println!("tmcs migrate: applied {m}");
                }
            }
            Ok(())
        }
        Command::Serve => {
            init_logging(&cfg, "info");
            let app = App::open(cfg, clock)?;
            serve(app, transport)
        }
        Command::Audit { command } => {
            init_logging(&cfg, "warn");
            audit_command(&cfg, clock, command)
        }
        Command::Hsm { command } => {
            init_logging(&cfg, "warn");
            hsm_command(cfg, clock, command)
        }
        Command::Tool(_) => Err(Failure::usage("demo and bench are handled above")),
    }
}

fn hsm_command(cfg: Config, clock: SharedClock, command: HsmCommand) -> Result<(), Failure> {
    use crate::config::KeyStorage;
    use crate::keyring;
    let domain = |e: crate::error::DomainError| Failure::failed(&e);
    match command {
        HsmCommand::Status => {
            let app = App::open(cfg, clock)?;
            let (keks, counts) = app
                .svc
                .store
                .read(|c| -> Result<_, crate::store::StoreError> {
                    Ok((
                        crate::store::wrapped::all_keks(c)?,
                        crate::store::wrapped::count_by_version(c)?,
                    ))
                })
                .map_err(AppError::from)?;
            println!("key storage: {}", app.cfg.file.hsm.key_storage.as_str());
            for k in keks {
                let n = counts
                    .iter()
                    .find(|(v, _)| *v == k.version)
                    .map_or(0, |(_, n)| *n);
                println!("KEK v{} ({}): {n} wrapped keys", k.version, k.key_id);
            }
            Ok(())
        }
        HsmCommand::Rewrap { batch } => {
            let store = Store::open(&app::store_settings(&cfg)).map_err(AppError::from)?;
            if keyring::rotation_pending(&store)? {
                println!("tmcs hsm rewrap: resuming the unfinished rotation");
            } else {
                // Before this process logs in as the user.
                let so_pin = keyring::so_pin(&cfg)?;
                let k = keyring::create_kek(&cfg, &store, clock.as_ref(), &so_pin)?;
                println!("tmcs hsm rewrap: created key-encryption key v{}", k.version);
            }
            drop(store);
            let app = App::open(cfg, clock)?;
            let r = keyring::rewrap(&app.svc, batch).map_err(domain)?;
            println!(
                "tmcs hsm rewrap: {} keys rewrapped in {} batches; every key is under v{}",
                r.keys, r.batches, r.version
            );
            Ok(())
        }
        HsmCommand::MigrateKeys { batch } => {
            if cfg.file.hsm.key_storage != KeyStorage::Wrapped {
                return Err(Failure::usage(
                    "hsm migrate-keys moves keys to wrapped storage: set hsm.key_storage = \"wrapped\" first",
                ));
            }
            let app = App::open(cfg, clock)?;
            let r = keyring::migrate_keys(&app.svc, batch).map_err(domain)?;
            println!(
                "tmcs hsm migrate-keys: {} keys moved to wrapped storage (certificates renewed); \
                 {} skipped (subscriber not active)",
                r.migrated, r.skipped
            );
            Ok(())
        }
    }
}

/// `tmcs demo` and `tmcs bench`: runs `tmcs-tools` from the directory of
/// this executable with the same arguments (and `--config`), in place of
/// this process, so its exit status is the command's.
fn delegate(config: Option<&Path>, tool: &ToolCommand) -> Result<(), Failure> {
    use std::os::unix::process::CommandExt;
    let bin = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(TOOLS_BIN)))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            Failure::usage(format!(
                "tmcs {} needs the {TOOLS_BIN} binary next to tmcs; \
                 build it with cargo build --release --workspace",
                tool.name()
            ))
        })?;
    let mut cmd = std::process::Command::new(&bin);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(tool.to_args());
    // Returns only when the exec failed.
    let e = cmd.exec();
    Err(Failure {
        code: 1,
        message: format!("cannot run {}: {e}", bin.display()),
    })
}

fn serve(app: App, transport: TransportFactory) -> Result<(), Failure> {
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let relay = if app.svc.relay.enabled() {
            Some(transport(&app.cfg).map_err(Failure::usage)?)
        } else {
            None
        };
        let svc = app.svc.clone();
        let bound = crate::api::bind(app)?;
        for a in &bound.addrs {
            tracing::info!("tmcs listening on https://{a}");
            println!("tmcs listening on https://{a}");
        }
        let handle = bound.server.handle();
        let pki_handle = bound.pki.as_ref().map(|l| l.server.handle());
        if let Some(pki) = bound.pki {
            for a in &pki.addrs {
                tracing::info!("tmcs public PKI on http://{a}/pki/");
                println!("tmcs public PKI on http://{a}/pki/");
            }
            actix_web::rt::spawn(pki.server);
        }
        actix_web::rt::spawn(crate::api::background(bound.state.clone()));
        if let Some(t) = relay {
            actix_web::rt::spawn(crate::relay::worker::run(svc, t));
        }
        actix_web::rt::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            // Both listeners drain at once (each within its shutdown timeout).
            let pki = async {
                if let Some(h) = pki_handle {
                    h.stop(true).await;
                }
            };
            futures_util::future::join(pki, handle.stop(true)).await;
        });
        bound.server.await.map_err(|e| Failure::failed(&e))
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

fn audit_key_from_store(store: &Store) -> Result<audit::report::AuditKey, Failure> {
    let row = store
        .read(|c| store::certs::current(c, crate::pki::names::AUDIT))
        .map_err(|e| Failure::failed(&e))?
        .ok_or_else(|| {
            Failure::failed(&AppError::Setup(
                "no audit certificate; run `tmcs init`".into(),
            ))
        })?;
    audit::report::AuditKey::from_pem(row.pem.as_bytes()).map_err(|e| Failure::failed(&e))
}

/// What an auditor kept, read from `path` by `parse` (none without a path);
/// an unreadable or unparsable file is a usage error naming it.
fn read_held<T>(
    path: Option<&std::path::Path>,
    parse: fn(&str) -> Result<Vec<T>, String>,
) -> Result<Vec<T>, Failure> {
    let Some(p) = path else {
        return Ok(Vec::new());
    };
    let text =
        std::fs::read_to_string(p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?;
    parse(&text).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))
}

fn audit_command(cfg: &Config, clock: SharedClock, command: AuditCommand) -> Result<(), Failure> {
    match command {
        AuditCommand::Verify {
            file,
            cert,
            checkpoints,
            tree_heads,
        } => {
            let held = audit::Held {
                checkpoints: read_held(checkpoints.as_deref(), audit::parse_held_checkpoints)?,
                tree_heads: read_held(tree_heads.as_deref(), audit::parse_held_tree_heads)?,
            };
            let result = match (file, cert) {
                (Some(file), Some(cert)) => {
                    let pem = std::fs::read(&cert)
                        .map_err(|e| Failure::usage(format!("{}: {e}", cert.display())))?;
                    let key = openssl::x509::X509::from_pem(&pem)
                        .and_then(|x| x.public_key())
                        .map_err(|e| {
                            Failure::usage(format!(
                                "{}: not a PEM certificate: {e}",
                                cert.display()
                            ))
                        })?;
                    let f = std::fs::File::open(&file)
                        .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
                    audit::verify_lines_held(std::io::BufReader::new(f), &key, &held)
                }
                (None, _) => {
                    let store = Store::open(&app::store_settings(cfg)).map_err(AppError::from)?;
                    let key = audit_key_from_store(&store)?.key;
                    audit::verify_store_held(&store, &key, &held)
                }
                (Some(_), None) => return Err(Failure::usage("--file needs --cert AUDIT_CERT")),
            };
            match result {
                Ok(r) => {
                    println!(
                        "audit log intact: {} events, {} signed checkpoints, {} signed tree heads, head {}",
                        r.events, r.checkpoints, r.tree_heads, r.head_hash
                    );
                    Ok(())
                }
                Err(e) => Err(Failure::failed(&e)),
            }
        }
        AuditCommand::Export { out } => {
            let store = Store::open(&app::store_settings(cfg)).map_err(AppError::from)?;
            let n = export(&store, &out).map_err(|e| Failure::failed(&e))?;
            println!("tmcs audit export: {n} lines written to {}", out.display());
            Ok(())
        }
        AuditCommand::Evidence { .. } => Err(Failure::usage("evidence is handled above")),
        AuditCommand::Report { out, subject } => {
            let store = Store::open(&app::store_settings(cfg)).map_err(AppError::from)?;
            let audit = audit_key_from_store(&store)?;
            let w =
                audit::report::write_report(&store, &audit, &out, subject.as_deref(), clock.now())
                    .map_err(|e| Failure::failed(&e))?;
            println!(
                "tmcs audit report: {} written ({} subscribers, {} certificates, {} parties, \
                 {} signatures)",
                w.index.display(),
                w.subscribers,
                w.certificates,
                w.parties,
                w.signatures
            );
            if w.verified() {
                Ok(())
            } else {
                let first = w.findings.iter().find(|f| !f.ok).map(|f| f.text.clone());
                Err(Failure {
                    code: 1,
                    message: first.unwrap_or_else(|| "the audit log failed verification".into()),
                })
            }
        }
        AuditCommand::Timeline { subject } => {
            let store = Store::open(&app::store_settings(cfg)).map_err(AppError::from)?;
            let (s, steps) =
                audit::report::timeline(&store, &subject).map_err(|e| Failure::failed(&e))?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{} ({} steps)",
                audit::report::text::terminal_safe(&s.describe()),
                steps.len()
            );
            let _ = out.write_all(audit::report::text::table(&steps).as_bytes());
            Ok(())
        }
        AuditCommand::Checkpoint => {
            let app = App::open(cfg.clone(), clock)?;
            let svc = &app.svc;
            match audit::make_checkpoint(
                &svc.store,
                svc.custody.as_ref(),
                &svc.pki.keys.audit,
                svc.clock.now(),
            )
            .map_err(|e| Failure::failed(&e))?
            {
                Some(cp) => println!("checkpoint signed at seq {}", cp.seq),
                None => println!("nothing new to checkpoint"),
            }
            if let Some(sth) =
                audit::tree::latest_sth(&svc.store).map_err(|e| Failure::failed(&e))?
            {
                let json = serde_json::to_string(&sth).map_err(|e| Failure::failed(&e))?;
                println!("signed tree head: {json}");
            }
            Ok(())
        }
    }
}

/// `tmcs audit evidence verify FILE --ca CA_PEM --audit-cert AUDIT_CERT`.
fn verify_evidence(file: &Path, ca: &Path, audit_cert: &Path) -> Result<(), Failure> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())));
    let (bundle, ca_pem, audit_pem) = (read(file)?, read(ca)?, read(audit_cert)?);
    let v =
        audit::evidence::verify(&bundle, &ca_pem, &audit_pem).map_err(|e| Failure::failed(&e))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "evidence of request {} ({}):",
        v.request_id,
        file.display()
    );
    for c in &v.checks {
        let _ = writeln!(out, "  ok: {c}");
    }
    let _ = writeln!(out, "evidence verified: every check passed");
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// Writes events, then checkpoints, then tree heads (`{"tree_head":…}`) as
/// JSON lines; returns the line count.
pub fn export(store: &Store, out: &Path) -> Result<usize, ExportError> {
    let tmp = out.with_extension("partial");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let mut n = 0;
    audit::for_each_stored(store, |r| -> Result<(), ExportError> {
        let line = audit::ExportLine::Event(audit::Event::from_row(r)?);
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
        n += 1;
        Ok(())
    })?;
    for cp in store.read(|c| audit_rows::checkpoints(c, 0, i64::MAX))? {
        let line = audit::ExportLine::Checkpoint {
            checkpoint: cp.into(),
        };
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
        n += 1;
    }
    for tree_head in audit::tree::all_sths(store)? {
        let line = audit::ExportLine::TreeHead { tree_head };
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
        n += 1;
    }
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, out)?;
    Ok(n)
}
