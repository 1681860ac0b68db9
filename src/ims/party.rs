//! Party identifiers: `local@role.domain` or `tel:+<E.164>`.

use std::fmt;
use std::str::FromStr;

use super::error::ImsError;

/// The role part of a named party id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartyRole {
    /// A natural person (payer, or payee in P2P).
    Person,
    /// A merchant (payee).
    Merchant,
    /// A financial service provider.
    Fsp,
    /// A bank.
    Bank,
}

impl PartyRole {
    /// The lowercase wire form: `person`, `merchant`, `fsp`, `bank`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PartyRole::Person => "person",
            PartyRole::Merchant => "merchant",
            PartyRole::Fsp => "fsp",
            PartyRole::Bank => "bank",
        }
    }
}

impl fmt::Display for PartyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PartyRole {
    type Err = ImsError;
    /// Exact, lowercase only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "person" => Ok(PartyRole::Person),
            "merchant" => Ok(PartyRole::Merchant),
            "fsp" => Ok(PartyRole::Fsp),
            "bank" => Ok(PartyRole::Bank),
            _ => Err(ImsError::malformed(
                "party role must be person, merchant, fsp or bank",
            )),
        }
    }
}

/// A party identifier.
///
/// Wire forms (exact, case-sensitive):
/// * `local@role.domain` — `local` 1–64 of `[A-Za-z0-9._-]`, `role` one of
///   `person|merchant|fsp|bank`, `domain` 1–63 of `[a-z0-9-]` (a single label);
/// * `tel:+` followed by 8–15 digits (E.164; the first digit must not be `0`,
///   as E.164 country codes never start with 0). Stored with the leading `+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PartyId {
    /// `local@role.domain`.
    Named {
        /// Local part, 1–64 of `[A-Za-z0-9._-]`.
        local: String,
        /// Role.
        role: PartyRole,
        /// Domain label, 1–63 of `[a-z0-9-]`.
        domain: String,
    },
    /// `tel:+4912345678`; holds `+4912345678`.
    Tel(String),
}

pub(crate) fn is_ref_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

fn is_domain_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// Checks an E.164 number with leading `+`.
fn valid_e164(s: &str) -> bool {
    match s.strip_prefix('+') {
        Some(digits) => {
            (8..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        }
        None => false,
    }
}

impl PartyId {
    /// Parses the wire form (see the type documentation).
    pub fn parse(s: &str) -> Result<PartyId, ImsError> {
        if let Some(number) = s.strip_prefix("tel:") {
            if valid_e164(number) {
                return Ok(PartyId::Tel(number.to_owned()));
            }
            return Err(ImsError::malformed(
                "tel: party id must be + and 8-15 digits (E.164)",
            ));
        }
        let (local, rest) = s.split_once('@').ok_or_else(|| {
            ImsError::malformed("party id must be local@role.domain or tel:+<digits>")
        })?;
        if local.is_empty() || local.len() > 64 || !local.bytes().all(is_ref_char) {
            return Err(ImsError::malformed(
                "party id local part must be 1-64 of [A-Za-z0-9._-]",
            ));
        }
        let (role, domain) = rest
            .split_once('.')
            .ok_or_else(|| ImsError::malformed("party id must be local@role.domain"))?;
        let role = PartyRole::from_str(role)?;
        if domain.is_empty() || domain.len() > 63 || !domain.bytes().all(is_domain_char) {
            return Err(ImsError::malformed(
                "party id domain must be 1-63 of [a-z0-9-]",
            ));
        }
        Ok(PartyId::Named {
            local: local.to_owned(),
            role,
            domain: domain.to_owned(),
        })
    }

    /// The role of a named id; `None` for `tel:`.
    pub fn role(&self) -> Option<PartyRole> {
        match self {
            PartyId::Named { role, .. } => Some(*role),
            PartyId::Tel(_) => None,
        }
    }

    /// Whether the id may be the payer (`from`): a person or a `tel:` id.
    pub fn is_payer_capable(&self) -> bool {
        matches!(self.role(), None | Some(PartyRole::Person))
    }

    /// Whether the id may be the payee (`to`): a merchant, a person (P2P) or
    /// a `tel:` id.
    pub fn is_payee_capable(&self) -> bool {
        matches!(
            self.role(),
            None | Some(PartyRole::Person) | Some(PartyRole::Merchant)
        )
    }

    /// The E.164 number (with `+`) of a `tel:` id.
    pub fn msisdn(&self) -> Option<&str> {
        match self {
            PartyId::Tel(n) => Some(n),
            PartyId::Named { .. } => None,
        }
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartyId::Named {
                local,
                role,
                domain,
            } => write!(f, "{local}@{role}.{domain}"),
            PartyId::Tel(n) => write!(f, "tel:{n}"),
        }
    }
}

impl FromStr for PartyId {
    type Err = ImsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PartyId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_tel() {
        let p = PartyId::parse("John.Bernard@person.xbank").unwrap();
        assert_eq!(
            p,
            PartyId::Named {
                local: "John.Bernard".into(),
                role: PartyRole::Person,
                domain: "xbank".into()
            }
        );
        assert!(p.is_payer_capable());
        assert_eq!(p.to_string(), "John.Bernard@person.xbank");

        let m = PartyId::parse("Merkur.Trade@merchant.xbank").unwrap();
        assert_eq!(m.role(), Some(PartyRole::Merchant));
        assert!(!m.is_payer_capable());
        assert!(m.is_payee_capable());

        let t = PartyId::parse("tel:+4912345678").unwrap();
        assert_eq!(t, PartyId::Tel("+4912345678".into()));
        assert_eq!(t.to_string(), "tel:+4912345678");
        assert_eq!(t.msisdn(), Some("+4912345678"));
        assert!(t.is_payer_capable() && t.is_payee_capable());

        for s in ["a@fsp.x", "a_b-c.d@bank.x-1"] {
            let p = PartyId::parse(s).unwrap();
            assert!(!p.is_payer_capable() && !p.is_payee_capable());
            assert_eq!(p.to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_ids() {
        let long_local = format!("{}@person.x", "a".repeat(65));
        let long_domain = format!("a@person.{}", "b".repeat(64));
        for s in [
            "",
            "John",
            "@person.xbank",
            "John@person.",
            "John@person",
            "John@Person.xbank",
            "John@user.xbank",
            "John@person.XBANK",
            "John@person.x.bank",
            "Jo hn@person.xbank",
            "Jo@hn@person.xbank",
            "John@person.xbank ",
            long_local.as_str(),
            long_domain.as_str(),
            "tel:4912345678",
            "tel:+1234567",
            "tel:+1234567890123456",
            "tel:+49-12345678",
            "tel:+0912345678",
            "TEL:+4912345678",
            "tel:+49123456７8",
        ] {
            assert!(PartyId::parse(s).is_err(), "{s:?} accepted");
        }
        assert!(PartyId::parse(&format!("{}@person.{}", "a".repeat(64), "b".repeat(63))).is_ok());
        assert!(PartyId::parse("tel:+12345678").is_ok());
        assert!(PartyId::parse("tel:+123456789012345").is_ok());
    }
}
