//! The report's HTML (maud: every interpolated value is escaped). Plain
//! HTML5 with an inline stylesheet and inline SVG: no script, no external
//! asset, and a Content-Security-Policy that forbids both, so a display
//! name such as `<script>…` can only ever be text.
//!
//! The page is written in pieces (see `super::write_report`): [`head`], then
//! sections, each a balanced fragment, with long tables streamed as
//! [`table_open`], batches of rows and [`TABLE_CLOSE`].

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::gather::{
    CertView, Counts, Finding, PartyInfo, PartyView, Signature, Step, SubscriberView,
};
use crate::clock::rfc3339_unix;

const STYLE: &str = r#"
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 76rem; padding: 1rem 1.5rem; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; }
h2 { font-size: 1.35rem; border-bottom: 2px solid #1b1b1b; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { font-size: 1.15rem; margin-top: 1.8rem; }
h4 { font-size: 1rem; margin-top: 1.2rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid #8a8a8a; padding: .25rem .45rem; text-align: left; vertical-align: top; }
thead th { background: #e8e8e8; }
tbody th { font-weight: 600; }
td.mono, .mono { font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
td.time, th.step { white-space: nowrap; }
td.actor { min-width: 8em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
ul.findings { list-style: none; padding: 0; }
ul.findings li { padding: .5rem .75rem; margin: .3rem 0; border-left: 6px solid; }
ul.findings li.ok { border-color: #1a7f37; background: #eef8f0; }
ul.findings li.bad { border-color: #b3261e; background: #fbeceb; font-weight: 600; }
.verdict { font-weight: 700; }
svg.timeline { display: block; max-width: 100%; height: auto; margin: .3rem 0; }
svg.timeline text { font: 11px system-ui, sans-serif; fill: #1b1b1b; }
.none { color: #555; font-style: italic; }
nav ol { columns: 2; }
footer { margin-top: 3rem; font-size: .85rem; color: #444; }
@media print {
  body { font-size: 9.5pt; max-width: none; padding: 0; }
  nav { display: none; }
  a { color: inherit; text-decoration: none; }
  h2 { break-before: auto; break-after: avoid; }
  h3, h4, caption { break-after: avoid; }
  article, section.cert, svg.timeline { break-inside: avoid-page; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; }
  ul.findings li { border-width: 0 0 0 4pt; }
  th, td { border-color: #000; }
}
"#;

/// The document's head, the title block with the scope, the contents and
/// the verification status; `main` is left open for the sections.
pub fn head(scope: &str, produced_at: &str, findings: &[Finding], counts: &Counts) -> Markup {
    let intact = findings.iter().all(|f| f.ok);
    html! {
        (DOCTYPE)
        (PreEscaped("<html lang=\"en\">"))
        head {
            meta charset="utf-8";
            meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="no-referrer";
            title { "tmcs audit report" }
            style { (PreEscaped(STYLE)) }
        }
        (PreEscaped("<body>"))
        header {
            h1 { "tmcs audit report" }
            p { "Scope: " strong { (scope) } ". Produced " (produced_at) " by tmcs " (env!("CARGO_PKG_VERSION")) "." }
            nav aria-label="Contents" {
                ol {
                    li { a href="#status" { "Verification status" } }
                    li { a href="#summary" { "Summary" } }
                    li { a href="#subscribers" { "Subscribers, their certificates and signatures" } }
                    li { a href="#parties" { "Parties" } }
                    li { a href="#service" { "Service certificates" } }
                }
            }
        }
        (PreEscaped("<main>"))
        section #status aria-labelledby="status-h" {
            h2 #status-h { "Verification status" }
            p.verdict #verdict {
                @if intact { "Verified: the audit log passed every check." }
                @else { "NOT VERIFIED: the audit log failed a check (below)." }
            }
            ul.findings {
                @for f in findings {
                    li class=(if f.ok { "ok" } else { "bad" }) {
                        (if f.ok { "Passed: " } else { "Failed: " }) (f.text)
                    }
                }
            }
            p { "These are the checks of " code { "tmcs audit verify" } ", run over the whole log when this report was made." }
        }
        section #summary aria-labelledby="summary-h" {
            h2 #summary-h { "Summary" }
            table {
                caption { "What this tmcs holds (whole database)" }
                thead { tr { th scope="col" { "Item" } th scope="col" { "Count" } } }
                tbody {
                    tr { th scope="row" { "Subscribers" } td { (counts.subscribers) } }
                    tr { th scope="row" { "Certificates" } td { (counts.certificates) } }
                    tr { th scope="row" { "Parties" } td { (counts.parties) } }
                    tr { th scope="row" { "Signed requests" } td { (counts.signatures) } }
                }
            }
        }
    }
}

/// Closes `main` and the document.
pub fn tail(note: &str) -> Markup {
    html! {
        (PreEscaped("</main>"))
        footer { p { (note) } }
        (PreEscaped("</body></html>\n"))
    }
}

/// Opens a section (`id`, heading) and says when it has nothing.
pub fn section_open(id: &str, heading: &str, intro: &str) -> Markup {
    html! {
        (PreEscaped(format!("<section id=\"{id}\" aria-labelledby=\"{id}-h\">")))
        h2 id=(format!("{id}-h")) { (heading) }
        p { (intro) }
    }
}

pub const SECTION_CLOSE: &str = "</section>\n";

/// A short "nothing here" line.
pub fn none(text: &str) -> Markup {
    html! { p.none { (text) } }
}

fn time_of(unix: i64) -> String {
    rfc3339_unix(unix)
}

/// The table of steps (time, step, actor, details), in order.
pub fn steps_table(caption: &str, steps: &[Step]) -> Markup {
    html! {
        @if steps.is_empty() {
            p.none { (caption) ": no audit events." }
        } @else {
            table.steps {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Seq" }
                    th scope="col" { "Time (UTC)" }
                    th scope="col" { "Step" }
                    th scope="col" { "Actor" }
                    th scope="col" { "Details" }
                } }
                tbody {
                    @for s in steps {
                        tr data-action=(s.action) {
                            td { (s.seq) }
                            td.mono.time { (s.ts) }
                            th.step scope="row" { (s.action) }
                            td.mono.actor { (s.actor) }
                            td { (s.details_line()) }
                        }
                    }
                }
            }
        }
    }
}

fn colour(action: &str) -> &'static str {
    match action {
        "cert.revoked" | "cert.expired" => "#b3261e",
        "cert.suspended" => "#b26a00",
        "cert.key_generated" => "#5a5a5a",
        _ => "#1f5fbf",
    }
}

/// A small timeline of a certificate's steps, evenly spaced in order (the
/// table beside it has the times). An image with a text alternative.
pub fn svg_timeline(serial: &str, steps: &[Step]) -> Markup {
    const W: usize = 720;
    const PAD: usize = 60;
    let n = steps.len();
    let x = |i: usize| -> usize {
        if n <= 1 {
            W / 2
        } else {
            PAD + i * (W - 2 * PAD) / (n - 1)
        }
    };
    let names: Vec<&str> = steps.iter().map(Step::step_name).collect();
    let title = format!(
        "Timeline of certificate {serial}: {}",
        if names.is_empty() {
            "no steps".to_string()
        } else {
            names.join(", then ")
        }
    );
    let title_id = format!("tl-{serial}");
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby=(title_id)
            width=(W) height="96" viewBox=(format!("0 0 {W} 96")) {
            title id=(title_id) { (title) }
            line x1=(x(0)) y1="48" x2=(x(n.saturating_sub(1))) y2="48" stroke="#8a8a8a" stroke-width="2" {}
            @for (i, s) in steps.iter().enumerate() {
                circle cx=(x(i)) cy="48" r="7" fill=(colour(&s.action)) {}
                text x=(x(i)) y=(if i % 2 == 0 { "28" } else { "76" }) text-anchor="middle" {
                    (s.step_name())
                }
                text x=(x(i)) y=(if i % 2 == 0 { "16" } else { "90" }) text-anchor="middle" fill="#555" {
                    (s.ts.get(..10).unwrap_or(&s.ts))
                }
            }
        }
    }
}

/// One certificate: what it is, its timeline and its steps.
pub fn cert(view: &CertView, level: u8) -> Markup {
    let r = &view.row;
    let heading = html! { "Certificate " span.mono { (r.serial) } " (" (r.purpose) ", " (r.status.as_str()) ")" };
    html! {
        section.cert id=(format!("cert-{}", r.serial)) {
            @if level == 3 { h3 { (heading) } } @else { h4 { (heading) } }
            dl {
                dt { "Serial" } dd.mono { (r.serial) }
                dt { "SHA-256 fingerprint" } dd.mono { (r.fingerprint) }
                dt { "Purpose" } dd { (r.purpose) }
                dt { "Owner" } dd.mono { (r.owner.as_deref().unwrap_or("(the service)")) }
                dt { "Issued by" } dd { (r.issuer) }
                dt { "Valid" } dd { (time_of(r.not_before)) " to " (time_of(r.not_after)) }
                dt { "End state" } dd {
                    (r.status.as_str())
                    @if let Some(reason) = &r.revocation_reason { " (" (reason) ")" }
                    @if let Some(at) = r.revoked_at { " since " (time_of(at)) }
                    @if let Some(next) = &r.superseded_by { "; superseded by " span.mono { (next) } }
                }
            }
            (svg_timeline(&r.serial, &view.steps))
            (steps_table(&format!("Life of certificate {}", r.serial), &view.steps))
        }
    }
}

/// A subscriber's article up to its signatures (streamed after it).
pub fn subscriber_open(v: &SubscriberView) -> Markup {
    let s = &v.info;
    html! {
        (PreEscaped(format!("<article class=\"subscriber\" id=\"sub-{}\">", html! { (s.id) }.into_string())))
        h3 { "Subscriber " q.name { (s.display_name) } }
        dl {
            dt { "Subscriber id" } dd.mono { (s.id) }
            dt { "Display name" } dd.name { (s.display_name) }
            dt { "MSISDN (masked)" } dd.mono { (s.msisdn_masked) }
            dt { "KYC reference" } dd { (s.kyc_ref) }
            @if let Some(a) = &s.alias { dt { "Person id" } dd.mono { (a) } }
            dt { "State" } dd { (s.state.as_str()) }
            dt { "Current certificate" } dd.mono { (s.cert_serial.as_deref().unwrap_or("none")) }
            dt { "Registered" } dd { (time_of(s.created_at)) }
        }
        (steps_table(&format!("History of subscriber {}", s.id), &v.steps))
        @if v.certs.is_empty() {
            (none("No certificate was issued to this subscriber."))
        }
        @for c in &v.certs { (cert(c, 4)) }
    }
}

pub const ARTICLE_CLOSE: &str = "</article>\n";

/// Opens a table whose rows follow in batches: its caption and column
/// headings, and an open `tbody` (closed by [`TABLE_CLOSE`]).
fn table_open(class: &str, caption: Markup, columns: &[&str]) -> Markup {
    html! {
        (PreEscaped(format!("<table class=\"{class}\">")))
        caption { (caption) }
        thead { tr { @for c in columns { th scope="col" { (c) } } } }
        (PreEscaped("<tbody>"))
    }
}

/// Opens the table of a subscriber's signatures (rows follow in batches).
pub fn signatures_open(subscriber_id: &str) -> Markup {
    html! {
        h4 { "Signatures made with this subscriber's keys" }
        (table_open(
            "signatures",
            html! { "Signed requests of subscriber " (subscriber_id) ", in order of signing" },
            &[
                "Request id",
                "Signed at (UTC)",
                "Amount",
                "Payee",
                "FSP",
                "Tier",
                "Status now",
                "Certificate",
                "Signature SHA-256",
            ],
        ))
    }
}

pub const TABLE_CLOSE: &str = "</tbody></table>\n";

pub fn signature_rows(rows: &[Signature]) -> Markup {
    html! {
        @for s in rows {
            tr {
                th.mono scope="row" { (s.request_id) }
                td.mono { (s.signed_at.map(time_of).unwrap_or_default()) }
                td { (s.amount) }
                td.mono { (s.payee) }
                td.mono { (s.fsp) }
                td { (s.tier) }
                td { (s.status.as_str()) }
                td.mono { (s.certificate.as_deref().unwrap_or("unknown")) }
                td.mono { (s.signature_sha256.as_deref().unwrap_or("unknown")) }
            }
        }
    }
}

/// Opens the parties table (rows follow in batches).
pub fn parties_open() -> Markup {
    table_open(
        "parties",
        html! { "Parties: merchants, FSPs, banks and gateways" },
        &[
            "Party id",
            "Kind",
            "Status",
            "Certificate serial",
            "Certificate SHA-256 fingerprint",
            "Registered (UTC)",
        ],
    )
}

pub fn party_row(p: &PartyInfo) -> Markup {
    html! {
        tr {
            th.mono scope="row" { a href=(format!("#party-{}", p.party_id)) { (p.party_id) } }
            td { (p.kind.as_str()) }
            td { (p.status.as_str()) }
            td.mono {
                @match &p.cert_serial {
                    Some(s) => { (s) }
                    None => { "(its own certificate)" }
                }
            }
            td.mono { (p.fingerprint) }
            td.mono { (time_of(p.created_at)) }
        }
    }
}

/// One party: its events and the certificate tmcs issued it.
pub fn party(v: &PartyView) -> Markup {
    let p = &v.info;
    html! {
        article.party id=(format!("party-{}", p.party_id)) {
            h3 { "Party " span.mono { (p.party_id) } }
            dl {
                dt { "Kind" } dd { (p.kind.as_str()) }
                dt { "Status" } dd { (p.status.as_str()) }
                dt { "Certificate fingerprint" } dd.mono { (p.fingerprint) }
                dt { "Certificate issued by" } dd { (if p.issued_by_us { "the tmcs issuing CA" } else { "the party's own CA" }) }
            }
            (steps_table(&format!("History of party {}", p.party_id), &v.steps))
            @for c in &v.certs { (cert(c, 4)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::report::gather::findings;
    use crate::audit::{VerifyError, VerifyFailure, VerifyReport};
    use crate::states::{CertStatus, PartyKind};

    const MARKUP: &str = "<script>alert(1)</script><img src=x onerror=\"x()\">";

    fn step(seq: i64, action: &str) -> Step {
        Step {
            seq,
            ts: "2026-12-02T10:00:00.000Z".into(),
            action: action.into(),
            actor: MARKUP.into(),
            subject: None,
            details: vec![("kyc_ref".into(), MARKUP.into())],
        }
    }

    fn no_markup(html: &str) {
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
    }

    #[test]
    fn stored_text_is_escaped_everywhere() {
        let steps = [step(1, "cert.issued"), step(2, "cert.revoked")];
        no_markup(&steps_table(MARKUP, &steps).into_string());
        no_markup(&svg_timeline(MARKUP, &steps).into_string());
        no_markup(&signatures_open(MARKUP).into_string());
        no_markup(
            &party_row(&PartyInfo {
                party_id: MARKUP.into(),
                kind: PartyKind::Merchant,
                status: CertStatus::Active,
                fingerprint: MARKUP.into(),
                cert_serial: Some(MARKUP.into()),
                issued_by_us: true,
                created_at: 0,
            })
            .into_string(),
        );
    }

    #[test]
    fn the_svg_is_an_image_named_by_its_steps_in_order() {
        let steps = [
            step(1, "cert.key_generated"),
            step(2, "cert.issued"),
            step(3, "cert.revoked"),
        ];
        let svg = svg_timeline("ab12", &steps).into_string();
        assert!(
            svg.contains("role=\"img\" aria-labelledby=\"tl-ab12\""),
            "{svg}"
        );
        assert!(
            svg.contains("<title id=\"tl-ab12\">Timeline of certificate ab12: key_generated, then issued, then revoked</title>"),
            "{svg}"
        );
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
    }

    #[test]
    fn the_status_says_verified_or_where_it_broke() {
        let counts = Counts {
            subscribers: 0,
            certificates: 0,
            parties: 0,
            signatures: 0,
        };
        let ok = findings(
            &Ok(VerifyReport {
                events: 7,
                checkpoints: 2,
                tree_heads: 3,
                head_hash: "ab".repeat(32),
            }),
            "ff00",
        );
        let page = head("all", "now", &ok, &counts).into_string();
        assert!(page.contains("Verified: the audit log passed every check."));
        assert!(page.contains("The audit log is intact: 7 events, seq 1 to 7"));
        assert!(page.contains("2 signed checkpoints verify with the audit certificate"));
        assert!(page.contains("3 signed tree heads verify with the same key"));
        assert!(page.contains("fingerprint ff00"));
        assert!(page.contains(&"ab".repeat(32)));
        assert!(page
            .contains("content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\""));
        assert!(page.contains("@media print"));
        assert!(!page.contains("<script"));

        let broken = findings(
            &Err(VerifyError::Broken(VerifyFailure {
                seq: 12,
                reason: "hash does not match the event's content (event changed)".into(),
            })),
            "ff00",
        );
        assert!(broken.iter().all(|f| !f.ok));
        let page = head("all", "now", &broken, &counts).into_string();
        assert!(page.contains("NOT VERIFIED"));
        assert!(
            page.contains(
                "The audit log FAILED verification at seq 12: hash does not match the \
                 event's content (event changed)."
            ),
            "{page}"
        );
        assert!(!page.contains("Verified: the audit log"));
    }
}
