//! The `tmcs` binary as an operator runs it: exit codes, `init` on the
//! embedded defaults (its own SoftHSM2 token under <data>/softhsm/), and
//! `audit verify` on a tampered database and export.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use diesel::{Connection, RunQueryDsl};

mod common;
use common::{stderr, stdout, tmcs, tmcs_with};

#[path = "../../tests/it/support.rs"]
#[allow(dead_code, unused_macros)]
mod support;

/// Short commands on PostgreSQL exit 0 every time. A pool thread still
/// connecting when the command returned ran into the exit handlers of
/// OpenSSL and Kerberos that libpq uses: SIGSEGV (or an abort) after
/// `audit log intact`, in about one run of ten.
#[test]
fn short_commands_on_postgres_exit_cleanly() {
    let Some(url) = support::postgres_or_skip("short_commands_on_postgres_exit_cleanly") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let env = [("TMCS_DATABASE__URL", url.as_str())];
    let o = tmcs_with(&data, &env, &["init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for i in 0..40 {
        let o = tmcs_with(&data, &env, &["audit", "verify"]);
        assert!(
            o.status.success() && stdout(&o).contains("audit log intact"),
            "run {i}: {:?} {}{}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
    }
}

#[test]
fn missing_config_file_exits_2_with_one_error_line() {
    let d = tempfile::tempdir().unwrap();
    let o = tmcs(
        &d.path().join("data"),
        &["--config", "/missing.toml", "serve"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: ") && err.contains("/missing.toml"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn unknown_config_key_exits_2() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\nsurprise = 1\n").unwrap();
    let o = tmcs(
        &d.path().join("data"),
        &["--config", cfg.to_str().unwrap(), "serve"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("surprise"), "{}", stderr(&o));
    let o = tmcs(&d.path().join("data"), &["no-such-command"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "));
    // Settings other layers interpret are configuration errors too.
    std::fs::write(&cfg, "[policy.currencies.EUR]\nsmall_max = \"50\"\nmedium_max = \"1000.00\"\nper_payment_max = \"10000.00\"\ndaily_max = \"20000.00\"\n").unwrap();
    let o = tmcs(
        &d.path().join("data"),
        &["--config", cfg.to_str().unwrap(), "serve"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("small_max"), "{}", stderr(&o));
    std::fs::write(&cfg, "[pin]\nargon2_memory_kib = 1\n").unwrap();
    let o = tmcs(
        &d.path().join("data"),
        &["--config", cfg.to_str().unwrap(), "serve"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for relay in [
        "[relay]\nmode = \"bank\"\n",
        "[relay]\nmode = \"fsp+bank\"\n",
    ] {
        std::fs::write(&cfg, relay).unwrap();
        let o = tmcs(
            &d.path().join("data"),
            &["--config", cfg.to_str().unwrap(), "serve"],
        );
        assert_eq!(o.status.code(), Some(2), "{relay}: {}", stderr(&o));
        assert!(stderr(&o).contains("relay."), "{}", stderr(&o));
    }
}

#[test]
fn serve_without_init_fails_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let o = tmcs(&d.path().join("data"), &["serve"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
}

/// `init` on the embedded defaults, checked with pkcs11-tool and openssl;
/// then `audit verify` catches an edited event in the SQLite file.
#[test]
fn init_on_embedded_defaults_then_tamper() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let o = tmcs(&data, &["init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("SoftHSM2 token"), "{}", stdout(&o));
    assert!(data.join("softhsm/softhsm2.conf").exists());
    assert!(data.join("softhsm/tokens").is_dir());
    let mode = std::fs::metadata(data.join("hsm.pin"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let ca = std::fs::read(data.join("ca.pem")).unwrap();

    // pkcs11-tool sees at least five private keys, each sensitive and never extractable.
    let pin = std::fs::read_to_string(data.join("hsm.pin")).unwrap();
    let out = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", data.join("softhsm/softhsm2.conf"))
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            "tmcs",
            "--login",
            "--pin",
            pin.trim(),
        ])
        .args(["--list-objects", "--type", "privkey"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{listing}");
    let keys: Vec<&str> = listing.split("Private Key Object").skip(1).collect();
    assert!(keys.len() >= 5, "{listing}");
    for k in &keys {
        assert!(
            k.contains("sensitive") && k.contains("never extractable"),
            "{k}"
        );
        assert!(
            !k.contains("Usage:      decrypt"),
            "private keys must not decrypt: {k}"
        );
    }

    let o = tmcs(&data, &["init"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("already in place"), "{}", stdout(&o));
    assert_eq!(std::fs::read(data.join("ca.pem")).unwrap(), ca);

    let o = tmcs(&data, &["audit", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("intact"));

    // Export, verify the file, then tamper with the database.
    let export = d.path().join("audit.jsonl");
    let o = tmcs(
        &data,
        &["audit", "export", "--out", export.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let cert = data.join("audit.pem");
    let o = tmcs(
        &data,
        &[
            "audit",
            "verify",
            "--file",
            export.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let mut c =
        diesel::SqliteConnection::establish(data.join("tmcs.db").to_str().unwrap()).unwrap();
    diesel::sql_query("UPDATE audit_events SET action = 'cert.revoked' WHERE seq = 12")
        .execute(&mut c)
        .unwrap();
    drop(c);
    let o = tmcs(&data, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("seq 12"), "{}", stderr(&o));

    // Tamper with the export: reorder two lines.
    let text = std::fs::read_to_string(&export).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(2, 3);
    std::fs::write(&export, lines.join("\n")).unwrap();
    let o = tmcs(
        &data,
        &[
            "audit",
            "verify",
            "--file",
            export.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("seq 3"), "{}", stderr(&o));
}

/// The real binary serving real traffic: afterwards neither its log (at
/// debug level) nor the SQLite files contain a PIN, a PIN block, an
/// activation code or the HSM PIN.
#[actix_web::test]
async fn no_secrets_in_the_database_or_the_log() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    assert!(tmcs(&data, &["init"]).status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = d.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tmcs"))
        .arg("--data-dir")
        .arg(&data)
        .arg("serve")
        .env("TMCS_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("TMCS_PKI__HTTP_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let ca = data.join("ca.pem");
    let anon = tmcs_client::https::https_client(&ca, None).unwrap();
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = anon.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                up = true;
                break;
            }
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        up,
        "server did not come up: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let op = tmcs_client::https::https_client(
        &ca,
        Some((
            &data.join("clients/operator.crt"),
            &data.join("clients/operator.key"),
        )),
    )
    .unwrap();
    let msisdn = crate::support::random_msisdn();
    let (st, _, b) = crate::support::post_json(
        &op,
        &format!("{base}/v1/admin/subscribers"),
        &serde_json::json!({"msisdn": msisdn, "display_name": "Log Test", "kyc_ref": "K"}),
    )
    .await;
    assert_eq!(st, 201);
    let code = b["activation_code"].as_str().unwrap().to_string();
    let transport = anon
        .get(format!("{base}/pki/transport.pem"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let h = tmcs_client::Handset::new(&msisdn, &transport).unwrap();
    // Long PINs, so that finding one by chance in hex or decimal text is negligible.
    let pin = "5819374062";
    let wrong_code = if code.starts_with('7') {
        "8".repeat(code.len())
    } else {
        "7".repeat(code.len())
    };
    let bad = h.activation_body(&wrong_code, pin).unwrap();
    let (st, _, _) =
        crate::support::post_json(&anon, &format!("{base}/v1/handset/activate"), &bad).await;
    assert_eq!(st, 403);
    let good = h.activation_body(&code, pin).unwrap();
    let (st, _, _) =
        crate::support::post_json(&anon, &format!("{base}/v1/handset/activate"), &good).await;
    assert_eq!(st, 200);
    let new_pin = "6381049275";
    let change = h.pin_change_body(pin, new_pin).unwrap();
    let hdr = h
        .device_header("POST", "/v1/handset/pin", unix_now())
        .unwrap();
    let (st, _, _) = crate::support::json_of(
        anon.post(format!("{base}/v1/handset/pin"))
            .insert_header(("authorization", hdr))
            .send_json(&change)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200);

    // Stop the server (SIGTERM) so the log is complete.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let _ = child.wait();
    let log_text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log_text.contains("request"),
        "the debug log should have request lines"
    );
    let hsm_pin = std::fs::read_to_string(data.join("hsm.pin"))
        .unwrap()
        .trim()
        .to_string();
    let mut secrets = vec![code.clone(), pin.to_string(), new_pin.to_string(), hsm_pin];
    for body in [&bad, &good] {
        secrets.push(body["pin_block"].as_str().unwrap().to_string());
    }
    secrets.push(change["old_pin_block"].as_str().unwrap().to_string());
    let mut stores = vec![("log".to_string(), log_text.into_bytes())];
    for f in ["tmcs.db", "tmcs.db-wal"] {
        if let Ok(b) = std::fs::read(data.join(f)) {
            stores.push((f.to_string(), b));
        }
    }
    for (name, bytes) in &stores {
        for s in &secrets {
            let found = bytes.windows(s.len()).any(|w| w == s.as_bytes());
            assert!(!found, "a secret ({} chars) appears in {name}", s.len());
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `demo` and `bench` are commands of `tmcs` (CONTRACT §1), carried out by
/// `tmcs-tools` (tested in `tools/tests/`); their help is `tmcs`'s own.
#[test]
fn help_lists_demo_and_bench() {
    let d = tempfile::tempdir().unwrap();
    let o = tmcs(&d.path().join("data"), &["--help"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for cmd in ["init", "serve", "demo", "migrate", "bench", "audit"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd}: {out}"
        );
    }
    let o = tmcs(&d.path().join("data"), &["bench", "--help"]);
    assert!(o.status.success());
    for flag in ["--seconds", "--handsets", "--floor-seconds", "--config"] {
        assert!(stdout(&o).contains(flag), "{flag}: {}", stdout(&o));
    }
    let o = tmcs(&d.path().join("data"), &["demo", "--help"]);
    assert!(stdout(&o).contains("--keep"), "{}", stdout(&o));
}

/// `tmcs audit evidence verify` is offline: it reads neither configuration
/// nor data dir (none is created), and a file it cannot read is a usage
/// error (exit 2, one line). Its verdicts on real bundles are tested in
/// tools/tests/tools.rs (the demo's bundle) and tests/it/evidence.rs.
#[test]
fn evidence_verify_is_offline_and_names_unreadable_files() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("never-created");
    let o = tmcs(
        &data,
        &[
            "audit",
            "evidence",
            "verify",
            "missing.json",
            "--ca",
            "ca.pem",
            "--audit-cert",
            "audit.pem",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: missing.json: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!data.exists(), "the data dir was touched");
    // Without --ca: clap's usage error, exit 2.
    let o = tmcs(&data, &["audit", "evidence", "verify", "b.json"]);
    assert_eq!(o.status.code(), Some(2));
}
