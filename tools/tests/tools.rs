//! The demo and the benchmark as processes: `tmcs-tools demo`, `tmcs demo`
//! (the service binary delegating to `tmcs-tools` next to it) and the
//! memory soak through `tmcs-tools bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tools_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tmcs-tools"))
}

/// `target/<profile>/tmcs`, built next to `tmcs-tools` by `cargo test --workspace`.
fn tmcs_bin() -> PathBuf {
    let bin = tools_bin().parent().unwrap().join("tmcs");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with cargo test --workspace",
        bin.display()
    );
    bin
}

/// `bin args…` in `dir`, without any `TMCS_*` variable of the caller.
fn run(bin: &Path, args: &[&str], dir: &Path) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("RUST_LOG", "debug").current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("TMCS_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// What `make demo` prints when it works: every step, the signed iMS, and
/// the demo's PIN nowhere (output, debug log, database).
fn assert_demo_succeeded(o: &Output) {
    let out = stdout(o);
    assert!(o.status.success(), "{out}\n{}", stderr(o));
    assert!(
        out.contains("demo complete: the payment settled, every signature verified"),
        "{out}"
    );
    for check in [
        "merchant over M: verified",
        "FSP over F: verified",
        "payer (tmcs, HSM) over C: verified",
        // The payer's instrument (issue 10), then paid by alias.
        "verifying (alias main)",
        "main DE89**************3000 active",
        "(ref POS-7-000123) from main",
        // The whole trip (issue 9): relayed, settled, told, receipted.
        "signed       → Demo.FSP@fsp.xbank             delivered",
        "instruction  → Demo.Bank@bank.xbank           delivered",
        "verified the payer's signature over C: 1",
        "payer    DE89370400440532013000: EUR 10000.00 → EUR 9000.00",
        "merchant DE02120300000000202051: EUR 10000.00 → EUR 11000.00",
        "0 invalid against the pain.001.001.09 XSD",
        "merchant got outcome",
        "status:settled",
        "receipt_sig verifies with /pki/display.pem",
    ] {
        assert!(out.contains(check), "{check} missing:\n{out}");
    }
    let xml_start = out.find("<iMS>").expect("the signed iMS is printed");
    let xml_end = out.find("</iMS>").expect("the signed iMS is printed") + "</iMS>".len();
    let xml: String = out[xml_start..xml_end].lines().map(str::trim).collect();
    let m = tmcs::ims::ImsMessage::parse(xml.as_bytes()).unwrap();
    assert!(m.from_sign.is_some() && m.to_sign.is_some() && m.fsp_sign.is_some());
    // The demo's PIN never shows, neither in its output and debug log nor in its database.
    let pin = "48291635";
    assert!(!out.contains(pin) && !stderr(o).contains(pin));
    let kept = out
        .lines()
        .find_map(|l| l.strip_prefix("data dir kept: "))
        .expect("--keep prints the data dir");
    let kept = std::path::PathBuf::from(kept.trim());
    evidence_verifies_offline(&out, &kept);
    for f in ["tmcs.db", "tmcs.db-wal"] {
        if let Ok(bytes) = std::fs::read(kept.join(f)) {
            assert!(
                !bytes.windows(pin.len()).any(|w| w == pin.as_bytes()),
                "PIN in {f}"
            );
        }
    }
    std::fs::remove_dir_all(&kept).unwrap();
}

/// The demo's evidence bundle (issue 12, CONTRACT §13), checked by
/// `tmcs audit evidence verify` as a separate process with the demo's
/// `ca.pem` and `audit.pem`: exit 0; a copy with one changed byte of the
/// iMS, the signature, the OCSP response, an event or the tree head exits 1
/// naming that part.
fn evidence_verifies_offline(out: &str, data: &Path) {
    assert!(
        out.contains("evidence verified offline"),
        "the demo checks its evidence:\n{out}"
    );
    let bundle = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("evidence bundle: "))
        .expect("the demo prints the bundle's path");
    let bundle = PathBuf::from(bundle.trim());
    assert!(bundle.starts_with(data), "{}", bundle.display());
    let (ca, audit) = (data.join("ca.pem"), data.join("audit.pem"));
    let verify = |file: &Path| {
        run(
            &tmcs_bin(),
            &[
                "audit",
                "evidence",
                "verify",
                file.to_str().unwrap(),
                "--ca",
                ca.to_str().unwrap(),
                "--audit-cert",
                audit.to_str().unwrap(),
            ],
            data,
        )
    };
    let o = verify(&bundle);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("evidence verified: every check passed"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("ok: "))
            .count(),
        8,
        "{text}"
    );
    // One changed byte in each part fails, naming that part.
    let pristine: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let ims = pristine["ims"].as_str().unwrap();
    let amount = ims.find("<amount>").unwrap() + "<amount>EUR".len();
    let len = |p: &str| pristine.pointer(p).unwrap().as_str().unwrap().len();
    for (pointer, at, named) in [
        ("/ims", amount, "iMS"),
        ("/signature", 20, "signature: does not verify"),
        ("/ocsp", len("/ocsp") / 2, "OCSP response"),
        ("/events/0/ts", 5, "event seq"),
        ("/sth/root_hash", 10, "tree head"),
    ] {
        let mut v = pristine.clone();
        let s = v.pointer_mut(pointer).unwrap();
        let mut bytes = s.as_str().unwrap().as_bytes().to_vec();
        bytes[at] = match bytes[at] {
            b'0' => b'1',
            b'A' => b'B',
            c if c.is_ascii_digit() => b'0',
            _ => b'A',
        };
        *s = serde_json::Value::String(String::from_utf8(bytes).unwrap());
        let bad = data.join("evidence-tampered.json");
        std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
        let o = verify(&bad);
        assert_eq!(o.status.code(), Some(1), "{pointer}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with("error: evidence: ") && err.contains(named),
            "{pointer} should be named {named:?}: {err}"
        );
    }
}

/// `tmcs-tools demo` completes and prints a fully signed iMS.
#[test]
fn demo_runs_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let o = run(&tools_bin(), &["demo", "--keep"], d.path());
    assert_demo_succeeded(&o);
}

/// `tmcs demo` (what `make demo` runs, CONTRACT §1) runs `tmcs-tools demo`
/// next to it, with `--config` passed through, and succeeds.
#[test]
fn tmcs_demo_delegates_to_the_tools_binary() {
    let d = tempfile::tempdir().unwrap();
    // An explicit --config reaches tmcs-tools: a file that sets nothing new.
    let cfg = d.path().join("custom.toml");
    std::fs::write(&cfg, "[server]\nlog_format = \"text\"\n").unwrap();
    let o = run(
        &tmcs_bin(),
        &["--config", cfg.to_str().unwrap(), "demo", "--keep"],
        d.path(),
    );
    assert_demo_succeeded(&o);
    // A bad one is a configuration error of the delegated command: exit 2, one line.
    std::fs::write(&cfg, "[server]\nsurprise = 1\n").unwrap();
    let o = run(
        &tmcs_bin(),
        &["--config", cfg.to_str().unwrap(), "demo"],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: ") && err.contains("surprise"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// Without `tmcs-tools` next to it, `tmcs demo` and `tmcs bench` say how to
/// build it (exit 2, one line).
#[test]
fn tmcs_demo_without_the_tools_binary_exits_2() {
    let target = tools_bin().parent().unwrap().to_path_buf();
    let d = tempfile::tempdir_in(&target).unwrap();
    let lone = d.path().join("tmcs");
    if std::fs::hard_link(tmcs_bin(), &lone).is_err() {
        std::fs::copy(tmcs_bin(), &lone).unwrap();
    }
    for cmd in ["demo", "bench"] {
        let o = run(&lone, &[cmd], d.path());
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert_eq!(
            stderr(&o).trim_end(),
            format!(
                "error: tmcs {cmd} needs the tmcs-tools binary next to tmcs; \
                 build it with cargo build --release --workspace"
            )
        );
    }
}

/// Memory under signing load (issue #8, finding 0). Every authorisation
/// hashes the PIN with argon2id (19 MiB of working memory). Before the fix,
/// glibc kept the freed buffers in per-thread arenas and the RSS of the
/// service climbed by hundreds of MiB within seconds of load. `tmcs bench`
/// runs the real service in-process and reports the process's RSS at the
/// start and end of its timed phase; both must stay bounded.
/// Runs `tmcs-tools bench` with `args` (the caller's `TMCS_*` removed,
/// `env` added) in a fresh directory; its one JSON line, parsed and as text.
fn bench_line(args: &[&str], env: &[(&str, &str)]) -> (serde_json::Value, String) {
    let d = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(tools_bin());
    cmd.arg("bench").args(args).current_dir(d.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("TMCS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let o = cmd.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = out.lines().last().expect("one JSON line").to_string();
    (serde_json::from_str(&line).unwrap(), line)
}

#[test]
fn rss_stays_bounded_under_signing_load() {
    let (v, line) = bench_line(
        &[
            "--seconds",
            "20",
            "--handsets",
            "16",
            "--floor-seconds",
            "1",
        ],
        &[],
    );
    let line = line.as_str();
    let auths = v["authorizations_per_s"].as_f64().unwrap() * v["seconds"].as_f64().unwrap();
    assert!(auths >= 100.0, "too few authorisations to judge: {line}");
    assert_eq!(v["errors"], 0, "{line}");
    let start = v["rss_mb_start"].as_f64().expect("rss_mb_start");
    let end = v["rss_mb_end"].as_f64().expect("rss_mb_end");
    eprintln!("soak: {auths:.0} authorisations, RSS {start} → {end} MiB");
    assert!(end < 256.0, "RSS reached {end} MiB under load: {line}");
    assert!(
        end - start < 96.0,
        "RSS grew by {} MiB during the timed phase: {line}",
        end - start
    );
}

/// `tmcs bench --population N` seeds N subscribers through the domain layer
/// (wrapped keys, certificates) and pays with payers drawn at random from
/// all of them: every payment succeeds, and the line has the fields the
/// issue names. (The figures themselves come from `make bench`.)
#[test]
fn population_bench_seeds_and_pays_with_random_payers() {
    let (v, line) = bench_line(
        &["--population", "1200", "--seconds", "3", "--handsets", "4"],
        &[
            ("TMCS_PIN__ARGON2_MEMORY_KIB", "1024"),
            ("TMCS_PIN__ARGON2_ITERATIONS", "1"),
        ],
    );
    let line = line.as_str();
    assert_eq!(v["scenario"], "population", "{line}");
    assert_eq!(v["population"], 1200, "{line}");
    assert_eq!(v["key_storage"], "wrapped", "{line}");
    assert_eq!(v["errors"], 0, "{line}");
    for k in [
        "authorizations_per_s",
        "p50_ms",
        "p99_ms",
        "rss_mb",
        "seed_per_s",
    ] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {line}");
    }
    assert_eq!(v["backend"], "sqlite", "{line}");
}
