//! Memory under signing load (issue #8, finding 0). Every authorisation
//! hashes the PIN with argon2id (19 MiB of working memory). Before the fix,
//! glibc kept the freed buffers in per-thread arenas and the RSS of the
//! service climbed by hundreds of MiB within seconds of load. `tmcs bench`
//! runs the real service in-process and reports the process's RSS at the
//! start and end of its timed phase; both must stay bounded.

use std::process::Command;

#[test]
fn rss_stays_bounded_under_signing_load() {
    let d = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tmcs"));
    cmd.args([
        "bench",
        "--seconds",
        "20",
        "--handsets",
        "16",
        "--floor-seconds",
        "1",
    ])
    .current_dir(d.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("TMCS_") {
            cmd.env_remove(k);
        }
    }
    let o = cmd.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = out.lines().last().expect("one JSON line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
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
