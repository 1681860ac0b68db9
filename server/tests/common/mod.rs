//! The `tmcs` binary as the command-line suites run it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `tmcs --data-dir DATA ARGS…`, run from DATA's parent.
pub fn tmcs(data: &Path, args: &[&str]) -> Output {
    tmcs_with(data, &[], args)
}

/// `tmcs` with the caller's `TMCS_*` removed and `env` set.
pub fn tmcs_with(data: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
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
    cmd.envs(env.iter().copied()).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
