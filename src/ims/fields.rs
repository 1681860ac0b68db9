//! Small value types of the iMS message: [`Tier`], [`Ref`], account strings.

use std::fmt;
use std::str::FromStr;

use super::error::ImsError;
use super::party::is_ref_char;

/// The `type` of an iMS: the security tier the sender claims for the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// `small`
    Small,
    /// `medium`
    Medium,
    /// `large`
    Large,
}

impl Tier {
    /// The wire form: `small`, `medium` or `large`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Small => "small",
            Tier::Medium => "medium",
            Tier::Large => "large",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = ImsError;
    /// Exact, lowercase only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "small" => Ok(Tier::Small),
            "medium" => Ok(Tier::Medium),
            "large" => Ok(Tier::Large),
            _ => Err(ImsError::malformed("type must be small, medium or large")),
        }
    }
}

/// The optional merchant reference `ref`: 1–64 of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ref(String);

impl Ref {
    /// Validates and wraps a reference.
    pub fn new(s: &str) -> Result<Ref, ImsError> {
        if !s.is_empty() && s.len() <= 64 && s.bytes().all(is_ref_char) {
            Ok(Ref(s.to_owned()))
        } else {
            Err(ImsError::malformed("ref must be 1-64 of [A-Za-z0-9._-]"))
        }
    }

    /// The reference.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Ref {
    type Err = ImsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ref::new(s)
    }
}

/// Maximum length of `accountPayable` / `accountReceivable`.
pub const MAX_ACCOUNT_LEN: usize = 64;

/// Whether `b` may appear in an account string: `[A-Za-z0-9._:/-]`.
pub fn is_account_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._:/-".contains(&b)
}

/// Validates an account string (`accountPayable`, `accountReceivable`):
/// 1–64 of `[A-Za-z0-9._:/-]` (e.g. `1234-5678-9abc`, an IBAN, `acct:42`).
pub fn validate_account(s: &str) -> Result<(), ImsError> {
    if !s.is_empty() && s.len() <= MAX_ACCOUNT_LEN && s.bytes().all(is_account_char) {
        Ok(())
    } else {
        Err(ImsError::malformed(
            "account must be 1-64 of [A-Za-z0-9._:/-]",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_round_trip() {
        for t in [Tier::Small, Tier::Medium, Tier::Large] {
            assert_eq!(t.as_str().parse::<Tier>().unwrap(), t);
        }
        for s in ["", "Small", "MEDIUM", "huge", " small"] {
            assert!(s.parse::<Tier>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn ref_rules() {
        assert_eq!(Ref::new("POS-7-000123").unwrap().as_str(), "POS-7-000123");
        assert!(Ref::new(&"a".repeat(64)).is_ok());
        for s in [
            String::new(),
            "a".repeat(65),
            "a b".into(),
            "a/b".into(),
            "ä".into(),
        ] {
            assert!(Ref::new(&s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn account_rules() {
        for s in ["1234-5678-9abc", "DE89370400440532013000", "acct:1/2.3_4"] {
            assert!(validate_account(s).is_ok(), "{s}");
        }
        for s in [
            String::new(),
            "a".repeat(65),
            "12 34".into(),
            "a&b".into(),
            "ä".into(),
        ] {
            assert!(validate_account(&s).is_err(), "{s:?}");
        }
    }
}
