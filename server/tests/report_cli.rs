//! `tmcs audit report` and `tmcs audit timeline` as an auditor runs them:
//! the real binary on a data dir made by `tmcs init` (embedded defaults,
//! its own SoftHSM2 token), exit codes, the terminal table, and a report
//! of a tampered log that says so at the top. The report's rendering in a
//! browser is `tests/it/report.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diesel::{Connection, RunQueryDsl};

mod common;
use common::{stderr, stdout, tmcs};

#[test]
fn report_and_timeline_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let o = tmcs(&data, &["init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // `+ certificate client:auditor (serial 5028…)`
    let init = stdout(&o);
    let serial = init
        .lines()
        .find(|l| l.contains("certificate client:auditor"))
        .and_then(|l| l.split("serial ").nth(1))
        .map(|s| s.trim_end_matches(')').to_string())
        .unwrap_or_else(|| panic!("no auditor certificate in {init}"));

    // The whole report.
    let out = d.path().join("report");
    let o = tmcs(&data, &["audit", "report", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("index.html written"), "{}", stdout(&o));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html><html lang=\"en\">"),
        "{html}"
    );
    assert!(html.contains("Verified: the audit log passed every check."));
    assert!(html.contains(&format!("id=\"cert-{serial}\"")));
    assert!(!out.join("index.html.partial").exists());

    // One certificate's history in the terminal: a header line, then the
    // table with the columns aligned.
    let o = tmcs(&data, &["audit", "timeline", "--subject", &serial]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with(&format!("certificate {serial}")),
        "{table}"
    );
    assert!(
        lines[1].starts_with("TIME") && lines[1].contains("ACTION"),
        "{table}"
    );
    let issued = lines
        .iter()
        .find(|l| l.contains("cert.issued"))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        issued.find("cert.issued"),
        lines[1].find("ACTION"),
        "{table}"
    );
    assert!(issued.contains("purpose: client:auditor"), "{table}");

    // Unknown subjects: exit 1, one error line, no report written.
    let o = tmcs(&data, &["audit", "timeline", "--subject", "+4915100000000"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1,
        "{err}"
    );
    assert!(err.contains("+4915100000000"), "{err}");
    let none = d.path().join("none");
    let o = tmcs(
        &data,
        &[
            "audit",
            "report",
            "--out",
            none.to_str().unwrap(),
            "--subject",
            "x@fsp.example",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!none.exists(), "nothing is written for an unknown subject");

    // A changed event: the report is still written, says where the log
    // broke at the top, and the command fails.
    let mut c =
        diesel::SqliteConnection::establish(data.join("tmcs.db").to_str().unwrap()).unwrap();
    diesel::sql_query("UPDATE audit_events SET actor = 'nobody' WHERE seq = 12")
        .execute(&mut c)
        .unwrap();
    drop(c);
    let o = tmcs(&data, &["audit", "report", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("seq 12"), "{}", stderr(&o));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let status = &html[html.find("id=\"status\"").unwrap()..html.find("id=\"summary\"").unwrap()];
    assert!(status.contains("NOT VERIFIED"), "{status}");
    assert!(
        status.contains("The audit log FAILED verification at seq 12"),
        "{status}"
    );
}
