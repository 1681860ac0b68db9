//! ISO 20022 for the bank simulator: `pain.001.001.09` checked with
//! `xmllint` against the XSD and read with quick-xml, `pain.002.001.10`
//! written with quick-xml's writer.

use std::io::Cursor;
use std::path::Path;
use std::process::Stdio;

use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::reader::Reader;
use quick_xml::writer::Writer;
use quick_xml::XmlVersion;
use tokio::io::AsyncWriteExt as _;

use tmcs::ims::Currency;

/// The pain.002 namespace.
pub(crate) const PAIN002_NS: &str = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.10";
/// What the pain.002 names as the original message.
pub(crate) const PAIN001_NAME: &str = "pain.001.001.09";

/// The longest xmllint complaint passed on.
const MAX_COMPLAINT: usize = 2000;

/// `xmllint --version`: whether xmllint runs at all.
pub(crate) async fn xmllint_present() -> Result<(), String> {
    let out = tokio::process::Command::new("xmllint")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("xmllint: {e} (install libxml2-utils)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err("xmllint --version failed (install libxml2-utils)".into())
    }
}

/// `xmllint --noout --nonet --schema XSD -` with `xml` on stdin; the
/// complaint when it does not validate.
pub(crate) async fn validate(xsd: &Path, xml: &[u8]) -> Result<(), String> {
    let mut child = tokio::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--nonet")
        .arg("--schema")
        .arg(xsd)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("xmllint: {e}"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| "xmllint: no stdin".to_string())?;
    let input = xml.to_vec();
    // Written while the output is read, so that neither pipe can fill up.
    let writer = tokio::spawn(async move {
        let r = stdin.write_all(&input).await;
        drop(stdin);
        r
    });
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("xmllint: {e}"))?;
    // A write error is xmllint having stopped reading; its status says why.
    let _ = writer.await;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let mut complaint: String = text
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != "- fails to validate")
        .map(|l| l.strip_prefix("-:").unwrap_or(l).trim())
        .collect::<Vec<_>>()
        .join("; ");
    if complaint.is_empty() {
        complaint = format!("xmllint exit status {}", out.status);
    }
    if complaint.len() > MAX_COMPLAINT {
        let mut cut = MAX_COMPLAINT;
        while !complaint.is_char_boundary(cut) {
            cut -= 1;
        }
        complaint.truncate(cut);
        complaint.push('…');
    }
    Err(complaint)
}

/// What the bank reads from a pain.001 (one `PmtInf`, one `CdtTrfTxInf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instruction {
    pub msg_id: String,
    pub pmt_inf_id: String,
    pub end_to_end_id: String,
    pub debtor: String,
    pub creditor: String,
    pub currency: Currency,
    /// `InstdAmt` in minor units.
    pub minor: i64,
}

/// Fields collected by [`read_pain001`], keyed by their path below
/// `Document/CstmrCdtTrfInitn`.
#[derive(Debug, Default)]
struct Fields {
    msg_id: Option<String>,
    nb_of_txs: Option<String>,
    ctrl_sum: Option<String>,
    pmt_inf_id: Option<String>,
    pmt_mtd: Option<String>,
    debtor: Option<String>,
    creditor: Option<String>,
    end_to_end_id: Option<String>,
    amount: Option<String>,
    ccy: Option<String>,
    pmt_infs: usize,
    txs: usize,
}

impl Fields {
    fn slot(&mut self, path: &[String]) -> Option<&mut Option<String>> {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        let rest = match p.as_slice() {
            ["Document", "CstmrCdtTrfInitn", rest @ ..] => rest,
            _ => return None,
        };
        match rest {
            ["GrpHdr", "MsgId"] => Some(&mut self.msg_id),
            ["GrpHdr", "NbOfTxs"] => Some(&mut self.nb_of_txs),
            ["GrpHdr", "CtrlSum"] => Some(&mut self.ctrl_sum),
            ["PmtInf", "PmtInfId"] => Some(&mut self.pmt_inf_id),
            ["PmtInf", "PmtMtd"] => Some(&mut self.pmt_mtd),
            ["PmtInf", "DbtrAcct", "Id", "IBAN"] | ["PmtInf", "DbtrAcct", "Id", "Othr", "Id"] => {
                Some(&mut self.debtor)
            }
            ["PmtInf", "CdtTrfTxInf", "PmtId", "EndToEndId"] => Some(&mut self.end_to_end_id),
            ["PmtInf", "CdtTrfTxInf", "Amt", "InstdAmt"] => Some(&mut self.amount),
            ["PmtInf", "CdtTrfTxInf", "CdtrAcct", "Id", "IBAN"]
            | ["PmtInf", "CdtTrfTxInf", "CdtrAcct", "Id", "Othr", "Id"] => Some(&mut self.creditor),
            _ => None,
        }
    }
}

/// Reads the fields the bank needs from a pain.001 that the XSD accepted,
/// and checks what CONTRACT §11 adds: one `PmtInf` with one `CdtTrfTxInf`,
/// `NbOfTxs` 1, `CtrlSum` = `InstdAmt`, `PmtMtd` `TRF`, `MsgId` = `PmtInfId`.
pub(crate) fn read_pain001(xml: &[u8]) -> Result<Instruction, String> {
    let text = std::str::from_utf8(xml).map_err(|_| "not UTF-8".to_string())?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut path: Vec<String> = Vec::new();
    let mut f = Fields::default();
    let mut buf = String::new();
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("XML at {}: {e}", reader.error_position()))?
        {
            Event::Start(e) => {
                path.push(e.local_name().as_ref().to_string());
                buf.clear();
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                match p.as_slice() {
                    ["Document", "CstmrCdtTrfInitn", "PmtInf"] => f.pmt_infs += 1,
                    ["Document", "CstmrCdtTrfInitn", "PmtInf", "CdtTrfTxInf"] => f.txs += 1,
                    ["Document", "CstmrCdtTrfInitn", "PmtInf", "CdtTrfTxInf", "Amt", "InstdAmt"] => {
                        let ccy = e
                            .try_get_attribute("Ccy")
                            .map_err(|e| format!("InstdAmt/@Ccy: {e}"))?
                            .ok_or_else(|| "InstdAmt has no Ccy".to_string())?;
                        f.ccy = Some(
                            ccy.normalized_value(XmlVersion::Explicit1_0)
                                .map_err(|e| format!("InstdAmt/@Ccy: {e}"))?
                                .trim()
                                .to_string(),
                        );
                    }
                    _ => {}
                }
            }
            Event::Empty(_) => buf.clear(),
            Event::Text(t) => buf.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c,
                    None => match r.xml10_content().as_ref() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(format!("unknown entity &{other};")),
                    },
                };
                buf.push(c);
            }
            Event::CData(t) => buf.push_str(&t.xml10_content()),
            Event::End(_) => {
                if let Some(slot) = f.slot(&path) {
                    // The first one counts; there is only one of each (checked below).
                    if slot.is_none() {
                        *slot = Some(buf.trim().to_string());
                    }
                }
                buf.clear();
                path.pop();
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if f.pmt_infs != 1 || f.txs != 1 {
        return Err(format!(
            "one PmtInf with one CdtTrfTxInf expected, got {} PmtInf and {} CdtTrfTxInf",
            f.pmt_infs, f.txs
        ));
    }
    let need = |v: Option<String>, what: &str| v.ok_or_else(|| format!("{what} missing"));
    let msg_id = need(f.msg_id, "GrpHdr/MsgId")?;
    let pmt_inf_id = need(f.pmt_inf_id, "PmtInf/PmtInfId")?;
    let end_to_end_id = need(f.end_to_end_id, "PmtId/EndToEndId")?;
    let debtor = need(f.debtor, "DbtrAcct/Id (IBAN or Othr/Id)")?;
    let creditor = need(f.creditor, "CdtrAcct/Id (IBAN or Othr/Id)")?;
    let amount = need(f.amount, "Amt/InstdAmt")?;
    let ccy = need(f.ccy, "InstdAmt/@Ccy")?;
    let currency =
        Currency::from_code(&ccy).ok_or_else(|| format!("InstdAmt: unknown currency {ccy}"))?;
    let minor = minor_units(&amount, currency).map_err(|e| format!("InstdAmt: {e}"))?;
    if minor <= 0 {
        return Err("InstdAmt: not positive".into());
    }
    let nb = need(f.nb_of_txs, "GrpHdr/NbOfTxs")?;
    if nb != "1" {
        return Err(format!("GrpHdr/NbOfTxs is {nb}, not 1"));
    }
    let ctrl = need(f.ctrl_sum, "GrpHdr/CtrlSum")?;
    if minor_units(&ctrl, currency) != Ok(minor) {
        return Err(format!("GrpHdr/CtrlSum {ctrl} is not InstdAmt {amount}"));
    }
    let mtd = need(f.pmt_mtd, "PmtInf/PmtMtd")?;
    if mtd != "TRF" {
        return Err(format!("PmtInf/PmtMtd is {mtd}, not TRF"));
    }
    if msg_id != pmt_inf_id {
        return Err(format!(
            "GrpHdr/MsgId {msg_id} and PmtInfId {pmt_inf_id} differ (both are the request id without hyphens)"
        ));
    }
    Ok(Instruction {
        msg_id,
        pmt_inf_id,
        end_to_end_id,
        debtor,
        creditor,
        currency,
        minor,
    })
}

/// A decimal amount (`12.5`, `12.50`, `12`) in the currency's minor units;
/// more fraction digits than the currency has must be zeros.
pub(crate) fn minor_units(text: &str, currency: Currency) -> Result<i64, String> {
    let bad = || format!("{text:?} is not an amount in {}", currency.code());
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (text.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    let exp = usize::from(currency.exponent());
    let (kept, dropped) = frac.split_at(frac.len().min(exp));
    if dropped.bytes().any(|b| b != b'0') {
        return Err(format!(
            "{text:?} has more than {exp} fraction digits for {}",
            currency.code()
        ));
    }
    let digits = format!("{int}{kept:0<exp$}");
    digits.parse::<i64>().map_err(|_| bad())
}

/// `ACSC` or `RJCT` with its reason, as the bank decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Acsc,
    Rjct(String),
}

impl Status {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Status::Acsc => "ACSC",
            Status::Rjct(_) => "RJCT",
        }
    }
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Status::Acsc => None,
            Status::Rjct(r) => Some(r),
        }
    }
}

/// The pain.002 status report for `ins`.
pub(crate) struct Report<'a> {
    pub msg_id: &'a str,
    pub created: &'a str,
    pub ins: &'a Instruction,
    pub status: &'a Status,
}

/// `<StsRsnInf><Rsn><Cd>CODE</Cd></Rsn></StsRsnInf>`.
fn reason<W: std::io::Write>(w: &mut Writer<W>, code: &str) -> std::io::Result<()> {
    w.create_element("StsRsnInf").write_inner_content(|w| {
        w.create_element("Rsn").write_inner_content(|w| {
            w.create_element("Cd")
                .write_text_content(BytesText::new(code))
                .map(|_| ())
        })?;
        Ok(())
    })?;
    Ok(())
}

fn text<W: std::io::Write>(w: &mut Writer<W>, name: &str, value: &str) -> std::io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))
        .map(|_| ())
}

/// Writes the `pain.002.001.10` `CstmrPmtStsRpt` for `r`.
pub(crate) fn pain002(r: &Report<'_>) -> Result<String, String> {
    let mut w = Writer::new(Cursor::new(Vec::new()));
    let code = r.status.code();
    let written: std::io::Result<()> = (|| {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        w.create_element("Document")
            .with_attribute(("xmlns", PAIN002_NS))
            .write_inner_content(|w| {
                w.create_element("CstmrPmtStsRpt")
                    .write_inner_content(|w| {
                        w.create_element("GrpHdr").write_inner_content(|w| {
                            text(w, "MsgId", r.msg_id)?;
                            text(w, "CreDtTm", r.created)
                        })?;
                        w.create_element("OrgnlGrpInfAndSts")
                            .write_inner_content(|w| {
                                text(w, "OrgnlMsgId", &r.ins.msg_id)?;
                                text(w, "OrgnlMsgNmId", PAIN001_NAME)?;
                                text(w, "GrpSts", code)?;
                                if let Some(why) = r.status.reason() {
                                    reason(w, why)?;
                                }
                                Ok(())
                            })?;
                        w.create_element("OrgnlPmtInfAndSts")
                            .write_inner_content(|w| {
                                text(w, "OrgnlPmtInfId", &r.ins.pmt_inf_id)?;
                                w.create_element("TxInfAndSts").write_inner_content(|w| {
                                    text(w, "OrgnlEndToEndId", &r.ins.end_to_end_id)?;
                                    text(w, "TxSts", code)?;
                                    if let Some(why) = r.status.reason() {
                                        reason(w, why)?;
                                    }
                                    Ok(())
                                })?;
                                Ok(())
                            })?;
                        Ok(())
                    })?;
                Ok(())
            })?;
        Ok(())
    })();
    written.map_err(|e| format!("writing pain.002: {e}"))?;
    String::from_utf8(w.into_inner().into_inner()).map_err(|e| format!("pain.002: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::from_code("EUR").unwrap()
    }

    #[test]
    fn amounts() {
        assert_eq!(minor_units("12.34", eur()), Ok(1234));
        assert_eq!(minor_units("12.3", eur()), Ok(1230));
        assert_eq!(minor_units("12", eur()), Ok(1200));
        assert_eq!(minor_units("12.340", eur()), Ok(1234));
        assert!(minor_units("12.345", eur()).is_err());
        assert!(minor_units("12.", eur()).is_err());
        assert!(minor_units(".5", eur()).is_err());
        assert!(minor_units("-1", eur()).is_err());
        assert!(minor_units("1e3", eur()).is_err());
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(minor_units("500", jpy), Ok(500));
        assert!(minor_units("500.5", jpy).is_err());
    }

    #[test]
    fn pain002_layout() {
        let ins = Instruction {
            msg_id: "abc".into(),
            pmt_inf_id: "abc".into(),
            end_to_end_id: "POS-1&2".into(),
            debtor: "D".into(),
            creditor: "C".into(),
            currency: eur(),
            minor: 100,
        };
        let x = pain002(&Report {
            msg_id: "m1",
            created: "2026-01-01T00:00:00Z",
            ins: &ins,
            status: &Status::Rjct("AM04".into()),
        })
        .unwrap();
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.002.001.10\"><CstmrPmtStsRpt><GrpHdr><MsgId>m1</MsgId>"), "{x}");
        assert!(x.contains("<OrgnlGrpInfAndSts><OrgnlMsgId>abc</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId><GrpSts>RJCT</GrpSts><StsRsnInf><Rsn><Cd>AM04</Cd></Rsn></StsRsnInf></OrgnlGrpInfAndSts>"), "{x}");
        assert!(x.contains("<TxInfAndSts><OrgnlEndToEndId>POS-1&amp;2</OrgnlEndToEndId><TxSts>RJCT</TxSts><StsRsnInf>"), "{x}");
    }
}
