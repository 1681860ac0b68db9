//! Process-test harness shared by `relay.rs` and `keys.rs`: `tmcs serve`
//! nodes as child processes, the simulators, parties and payers, and a
//! throwaway PostgreSQL database per test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tmcs::clock::SharedClock;
use tmcs::ims::Tier;
use tmcs_client::Handset;
use tmcs_tools::demo::party_client;
use tmcs_tools::trip::{self, Parties, Payment, SimTls, Sims, Terms, MERCHANT_IBAN, PAYER_IBAN};

pub const PIN: &str = "480263";

/// The XSD our pain.001 must validate against: CONTRACT §11's own file,
/// `../shared/schemas/pain.001.001.09.xsd` beside this checkout. Where the
/// checkout stands alone, the repository's copy `schemas/` (byte-equal to
/// it, which `relay::pain`'s `the_xsd_is_the_contracts` checks whenever both
/// are there), said on stderr as `relay::pain`'s tests say it.
pub fn contract_xsd() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let shared = root.join("../shared/schemas/pain.001.001.09.xsd");
    if shared.is_file() {
        return shared;
    }
    let ours = root.join("schemas/pain.001.001.09.xsd");
    eprintln!(
        "NOT VALIDATED against {}: not beside this checkout; the bank judges with the copy {}",
        shared.display(),
        ours.display()
    );
    ours
}

pub fn tools_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tmcs-tools"))
}

/// `target/<profile>/tmcs`, built next to `tmcs-tools` by `cargo test --workspace`.
pub fn tmcs_bin() -> PathBuf {
    let bin = tools_bin().parent().unwrap().join("tmcs");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with cargo test --workspace",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The environment of a node: the caller's `TMCS_*` removed, fast argon2,
/// a quick retry schedule, and `extra`.
pub fn tmcs_cmd(data: &Path, extra: &[(String, String)]) -> Command {
    let mut cmd = Command::new(tmcs_bin());
    cmd.arg("--data-dir")
        .arg(data)
        .current_dir(data.parent().unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("TMCS_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in [
        ("TMCS_PKI__HTTP_LISTEN", "127.0.0.1:0"),
        ("TMCS_PIN__ARGON2_MEMORY_KIB", "1024"),
        ("TMCS_PIN__ARGON2_ITERATIONS", "1"),
        ("TMCS_RELAY__TIMEOUT_SECONDS", "2"),
        ("TMCS_RELAY__MAX_ATTEMPTS", "4"),
        ("TMCS_RELAY__INITIAL_BACKOFF_MS", "100"),
        ("TMCS_RELAY__MAX_BACKOFF_MS", "400"),
        ("TMCS_RELAY__POLL_INTERVAL_MS", "50"),
        ("TMCS_AUDIT__CHECKPOINT_INTERVAL_SECONDS", "2"),
    ] {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

pub fn run_tmcs(data: &Path, extra: &[(String, String)], args: &[&str]) -> Output {
    tmcs_cmd(data, extra).args(args).output().unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One `tmcs serve` process.
pub struct Node {
    pub name: String,
    pub data: PathBuf,
    pub env: Vec<(String, String)>,
    pub port: u16,
    pub child: Option<Child>,
    pub starts: u32,
}

impl Node {
    pub fn new(name: &str, data: &Path, env: &[(String, String)]) -> Node {
        let port = free_port();
        let mut env = env.to_vec();
        env.push(("TMCS_SERVER__LISTEN".into(), format!("127.0.0.1:{port}")));
        env.push(("TMCS_RELAY__NODE_ID".into(), name.into()));
        Node {
            name: name.into(),
            data: data.to_path_buf(),
            env,
            port,
            child: None,
            starts: 0,
        }
    }

    pub fn base(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Starts `tmcs serve`; returns its log file.
    pub fn spawn(&mut self) -> PathBuf {
        self.starts += 1;
        let log = self
            .data
            .parent()
            .unwrap()
            .join(format!("{}-{}.log", self.name, self.starts));
        let out = std::fs::File::create(&log).unwrap();
        let child = tmcs_cmd(&self.data, &self.env)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        log
    }

    /// Whether the started node listens yet (it must not have exited).
    pub fn listening(&mut self, log: &Path) -> bool {
        let s = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("{} exited {st}: {s}", self.name);
        }
        s.contains("tmcs listening on https://")
    }

    /// Starts `tmcs serve` and waits until it listens.
    pub async fn start(&mut self) {
        let log = self.spawn();
        wait_listening(|| self.listening(&log)).await;
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

pub async fn wait_listening(mut up: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !up() {
        assert!(Instant::now() < deadline, "a node did not start in 30 s");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A node (or two), its simulators, parties and payers.
pub struct Trip {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub env: Vec<(String, String)>,
    pub node: std::cell::RefCell<Node>,
    pub sims: Sims,
    pub parties: Parties,
    pub operator: awc::Client,
    pub fsp_client: awc::Client,
    pub anon: awc::Client,
    pub clock: SharedClock,
}

impl Trip {
    /// `tmcs init`, the simulators, `tmcs serve` in `mode`, the parties
    /// registered with their callback URLs.
    pub async fn start(mode: &str, db_url: Option<&str>) -> Trip {
        Self::start_with(mode, db_url, &[]).await
    }

    /// [`Trip::start`] with more environment for the node.
    pub async fn start_with(mode: &str, db_url: Option<&str>, extra: &[(&str, &str)]) -> Trip {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut env = vec![
            ("TMCS_RELAY__MODE".to_string(), mode.to_string()),
            ("TMCS_RELAY__BANK".to_string(), trip::BANK.to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        if let Some(u) = db_url {
            env.push(("TMCS_DATABASE__URL".into(), u.to_string()));
        }
        let o = run_tmcs(&data, &env, &["init"]);
        assert!(o.status.success(), "init: {}", text(&o));
        assert!(
            data.join("relay/client.crt").is_file(),
            "init issues the relay certificate"
        );
        let tls = SimTls {
            cert: data.join("tls/server.crt"),
            key: data.join("tls/server.key"),
            ca: data.join("ca.pem"),
        };
        let sims =
            Sims::start_judged_by(&tools_bin(), &tls, dir.path(), Some(&contract_xsd())).unwrap();
        let mut node = Node::new("node-a", &data, &env);
        node.start().await;
        let ca = data.join("ca.pem");
        let operator = tmcs_client::https::https_client(
            &ca,
            Some((
                &data.join("clients/operator.crt"),
                &data.join("clients/operator.key"),
            )),
        )
        .unwrap();
        let anon = tmcs_client::https::https_client(&ca, None).unwrap();
        let parties = trip::register_parties(&node.base(), &operator, &sims)
            .await
            .unwrap();
        let fsp_client = party_client(&ca, &parties.fsp).unwrap();
        Trip {
            dir,
            data,
            env,
            node: std::cell::RefCell::new(node),
            sims,
            parties,
            operator,
            fsp_client,
            anon,
            clock: std::sync::Arc::new(tmcs::clock::SystemClock),
        }
    }

    pub fn base(&self) -> String {
        self.node.borrow().base()
    }

    pub fn payment<'a>(&'a self, base: &'a str) -> Payment<'a> {
        Payment {
            base,
            fsp_client: &self.fsp_client,
            anon: &self.anon,
            merchant: &self.parties.merchant,
            fsp: &self.parties.fsp,
            clock: &self.clock,
        }
    }

    pub async fn handsets(&self, prefix: u32, n: usize) -> Vec<Handset> {
        trip::activate_handsets(&self.base(), &self.operator, &self.anon, prefix, n, PIN)
            .await
            .unwrap()
    }

    pub async fn balances(&self) -> Value {
        self.sims
            .bank
            .get(&self.operator, "/balances")
            .await
            .unwrap()
    }

    pub async fn get(&self, client: &awc::Client, path: &str) -> (u16, Value) {
        let mut res = client
            .get(format!("{}{path}", self.base()))
            .send()
            .await
            .unwrap();
        let body = res.body().limit(4 << 20).await.unwrap();
        (
            res.status().as_u16(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    pub async fn post(&self, client: &awc::Client, path: &str, body: &Value) -> (u16, Value) {
        let mut res = client
            .post(format!("{}{path}", self.base()))
            .send_json(body)
            .await
            .unwrap();
        let body = res.body().limit(4 << 20).await.unwrap();
        (
            res.status().as_u16(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    /// One payment by `h` through the node at `base`, awaited until settled.
    pub async fn pay_and_settle(&self, base: &str, h: &Handset, reference: &str) -> String {
        let pay = self.payment(base);
        let paid = pay
            .pay(h, PIN, &terms(reference, "EUR1.00"))
            .await
            .unwrap_or_else(|e| panic!("payment {reference}: {e}"));
        pay.await_status(&paid.request_id, &["settled"], Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("payment {reference}: {e}"));
        paid.request_id
    }

    /// The deliveries of one request, as the operator sees them.
    pub async fn deliveries_of(&self, request_id: &str) -> Vec<Value> {
        let (st, v) = self.get(&self.operator, "/v1/admin/relay?limit=1000").await;
        assert_eq!(st, 200, "{v}");
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["request_id"] == request_id)
            .cloned()
            .collect()
    }

    /// `tmcs audit verify` on the node's database.
    pub fn audit_verifies(&self) {
        let o = run_tmcs(&self.data, &self.env, &["audit", "verify"]);
        assert!(o.status.success(), "audit verify: {}", text(&o));
    }

    /// The audit actions recorded about request `id`.
    pub async fn actions_of(&self, id: &str) -> Vec<String> {
        let auditor = tmcs_client::https::https_client(
            &self.data.join("ca.pem"),
            Some((
                &self.data.join("clients/auditor.crt"),
                &self.data.join("clients/auditor.key"),
            )),
        )
        .unwrap();
        let (st, v) = self
            .get(
                &auditor,
                &format!("/v1/audit/events?subject=request:{id}&limit=1000"),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        let actions: Vec<String> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect();
        actions
    }
}

pub fn terms<'a>(reference: &'a str, amount: &'a str) -> Terms<'a> {
    Terms {
        reference,
        amount,
        tier: Tier::Small,
        payable: PAYER_IBAN,
        receivable: MERCHANT_IBAN,
    }
}

/// A fresh database in the throwaway cluster of `make test`, or `None`
/// (then the test says SKIPPED, and fails when the cluster is required).
pub fn postgres_url(test: &str) -> Option<(String, String)> {
    let Ok(host) = std::env::var("PGHOST") else {
        assert!(
            std::env::var("TMCS_TEST_PG").as_deref() != Ok("required"),
            "{test}: PostgreSQL is required (TMCS_TEST_PG=required) but PGHOST is unset"
        );
        eprintln!("SKIPPED {test}: no PostgreSQL cluster (PGHOST unset); `make test` provides one");
        return None;
    };
    let port = std::env::var("PGPORT").unwrap_or_else(|_| "5432".into());
    let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into());
    let pass = std::env::var("PGPASSWORD").unwrap_or_default();
    let mut b = [0u8; 6];
    openssl::rand::rand_bytes(&mut b).unwrap();
    let name = format!("tmcs_relay_{}", hex_of(&b));
    let o = Command::new("psql")
        .args([
            "-q",
            "-d",
            "postgres",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "CREATE DATABASE: {}", text(&o));
    Some((
        format!("postgres://{user}:{pass}@{host}:{port}/{name}"),
        name,
    ))
}

pub fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One number from `psql`.
pub fn psql_count(db: &str, sql: &str) -> i64 {
    let o = Command::new("psql")
        .args(["-At", "-d", db, "-c", sql])
        .output()
        .unwrap();
    assert!(o.status.success(), "psql: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}
