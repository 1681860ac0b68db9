//! Integration tests, one binary (kanidm style): real SoftHSM2, real SQLite
//! and PostgreSQL, a real HTTPS server, the openssl CLI as the judge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod acceptance;
mod api_foundation;
mod audit_chain;
mod audit_tree;
mod core_bugs;
mod evidence;
mod fuzz_corpus;
mod hardening;
mod hsm;
mod init;
mod lifecycle;
mod ocsp;
mod pkicheck;
mod repo_hygiene;
mod report;
mod revocation;
mod signing;
mod write_path;
