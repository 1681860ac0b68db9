//! Canonical signing inputs `ims-c1` (CONTRACT §5), byte-exact:
//!
//! ```text
//! M = "ims-c1\n" "type:" T "\n" "ref:" R "\n" "from.id:" F "\n" "to.id:" P "\n"
//!     "timestamp:" TS "\n" "amount:" CUR AMT "\n"
//! F = M "accountPayable:" AP "\n" "accountReceivable:" AR "\n" "to.sign:" b64(S_m) "\n"
//! C = F "fsp.sign:" b64(S_f) "\n"
//! ```
//!
//! `R` is empty without `ref`; base64 is standard with padding.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::error::ImsError;
use super::ImsMessage;

fn line(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    out.push(b':');
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

pub(crate) fn canonical_m(m: &ImsMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"ims-c1\n");
    line(&mut out, "type", m.tier.as_str());
    line(
        &mut out,
        "ref",
        m.reference.as_ref().map(|r| r.as_str()).unwrap_or(""),
    );
    line(&mut out, "from.id", &m.from.to_string());
    line(&mut out, "to.id", &m.to.to_string());
    line(&mut out, "timestamp", &m.timestamp_str());
    line(&mut out, "amount", &m.amount.to_string());
    out
}

pub(crate) fn canonical_f(m: &ImsMessage) -> Result<Vec<u8>, ImsError> {
    let to_sign = m
        .to_sign
        .as_deref()
        .ok_or_else(|| ImsError::malformed_at("to/sign", "merchant signature is missing"))?;
    let mut out = canonical_m(m);
    line(&mut out, "accountPayable", &m.account_payable);
    line(&mut out, "accountReceivable", &m.account_receivable);
    line(&mut out, "to.sign", &STANDARD.encode(to_sign));
    Ok(out)
}

pub(crate) fn canonical_c(m: &ImsMessage) -> Result<Vec<u8>, ImsError> {
    let fsp_sign = m
        .fsp_sign
        .as_deref()
        .ok_or_else(|| ImsError::malformed_at("FSPsign", "FSP signature is missing"))?;
    let mut out = canonical_f(m)?;
    line(&mut out, "fsp.sign", &STANDARD.encode(fsp_sign));
    Ok(out)
}
