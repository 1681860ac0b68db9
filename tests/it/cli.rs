//! The `tmcs` binary as an operator runs it: exit codes, `init` on the
//! embedded defaults (its own SoftHSM2 token under <data>/softhsm/), and
//! `audit verify` on a tampered database and export.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use diesel::{Connection, RunQueryDsl};

fn tmcs(data: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tmcs"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(args)
        .current_dir(data.parent().unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("TMCS_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
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
