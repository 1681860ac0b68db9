//! Serialises an [`ImsMessage`] to the contract's XML layout.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use quick_xml::escape::escape;

use super::ImsMessage;

fn sig(s: &Option<Vec<u8>>) -> String {
    s.as_deref().map(|b| STANDARD.encode(b)).unwrap_or_default()
}

/// Renders the message as in CONTRACT §5: two-space indentation, `from`/`to`
/// on one line each, `<sign></sign>` for an absent signature, `ref` omitted
/// when `None`, the normalised timestamp and the canonical amount. Text is
/// escaped with the predefined entities. Ends with a newline.
pub(crate) fn to_xml(m: &ImsMessage) -> String {
    let mut out = String::with_capacity(1024);
    // `write!` to a String cannot fail; the results are ignored on purpose.
    out.push_str("<iMS>\n");
    let _ = writeln!(out, "  <type>{}</type>", m.tier.as_str());
    if let Some(r) = &m.reference {
        let _ = writeln!(out, "  <ref>{}</ref>", escape(r.as_str()));
    }
    out.push_str("  <address>\n");
    let _ = writeln!(
        out,
        "    <from><id>{}</id><sign>{}</sign></from>",
        escape(m.from.to_string()),
        sig(&m.from_sign)
    );
    let _ = writeln!(
        out,
        "    <to><id>{}</id><sign>{}</sign></to>",
        escape(m.to.to_string()),
        sig(&m.to_sign)
    );
    let _ = writeln!(out, "    <FSPsign>{}</FSPsign>", sig(&m.fsp_sign));
    let _ = writeln!(out, "    <timestamp>{}</timestamp>", m.timestamp_str());
    out.push_str("  </address>\n  <data>\n");
    let _ = writeln!(
        out,
        "    <accountPayable>{}</accountPayable>",
        escape(m.account_payable.as_str())
    );
    let _ = writeln!(
        out,
        "    <accountReceivable>{}</accountReceivable>",
        escape(m.account_receivable.as_str())
    );
    let _ = writeln!(out, "    <amount>{}</amount>", m.amount);
    out.push_str("  </data>\n</iMS>\n");
    out
}
