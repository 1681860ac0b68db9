//! Monetary amounts: a currency and a positive number of minor units.

use std::fmt;
use std::str::FromStr;

use super::currency::Currency;
use super::error::ImsError;

/// Maximum number of integer (major-unit) digits accepted in an amount.
pub const MAX_INTEGER_DIGITS: usize = 15;

/// A positive amount of money held as integer minor units.
///
/// Invariants (enforced by every constructor): `minor > 0` and the integer
/// part has at most [`MAX_INTEGER_DIGITS`] digits, so the canonical string
/// always parses back to the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    currency: Currency,
    minor: u64,
}

impl Money {
    /// Builds an amount from minor units. Fails (`ims.malformed`) for zero or
    /// for more than [`MAX_INTEGER_DIGITS`] integer digits.
    pub fn new(currency: Currency, minor: u64) -> Result<Money, ImsError> {
        if minor == 0 {
            return Err(ImsError::malformed("amount must be positive"));
        }
        let limit = 10u64.pow(MAX_INTEGER_DIGITS as u32);
        if minor / currency.minor_per_major() >= limit {
            return Err(ImsError::malformed(format!(
                "amount has more than {MAX_INTEGER_DIGITS} integer digits"
            )));
        }
        Ok(Money { currency, minor })
    }

    /// Parses the canonical form, e.g. `EUR1000.00`, `JPY500`, `KWD1.000`.
    ///
    /// Rules: three uppercase letters (an ISO 4217 code in the table, else
    /// `ims.currency_unsupported`), then a decimal with exactly the
    /// currency's minor digits (no point when the exponent is 0); no sign, no
    /// exponent, no spaces, no leading zeros except a single `0` before the
    /// point; at most [`MAX_INTEGER_DIGITS`] integer digits; value > 0.
    pub fn parse(s: &str) -> Result<Money, ImsError> {
        let bytes = s.as_bytes();
        let code = match (bytes.get(..3), s.get(..3)) {
            (Some(b), Some(code)) if b.iter().all(u8::is_ascii_uppercase) => code,
            _ => {
                return Err(ImsError::malformed(
                    "amount must start with a three-letter ISO 4217 code",
                ))
            }
        };
        let currency = Currency::from_code(code).ok_or_else(ImsError::currency_unsupported)?;
        let number = s.get(3..).unwrap_or("");
        let exp = usize::from(currency.exponent());
        let (int_part, frac_part) = if exp == 0 {
            (number, "")
        } else {
            match number.split_once('.') {
                Some((i, f)) => (i, f),
                None => {
                    return Err(ImsError::malformed(format!(
                        "amount needs exactly {exp} decimal digits for {currency}"
                    )))
                }
            }
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ImsError::malformed(
                "amount must be an unsigned decimal number",
            ));
        }
        if int_part.len() > 1 && int_part.starts_with('0') {
            return Err(ImsError::malformed("amount has leading zeros"));
        }
        if int_part.len() > MAX_INTEGER_DIGITS {
            return Err(ImsError::malformed(format!(
                "amount has more than {MAX_INTEGER_DIGITS} integer digits"
            )));
        }
        if frac_part.len() != exp || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ImsError::malformed(format!(
                "amount needs exactly {exp} decimal digits for {currency}"
            )));
        }
        let int: u64 = int_part
            .parse()
            .map_err(|_| ImsError::malformed("amount is not a number"))?;
        let frac: u64 = if frac_part.is_empty() {
            0
        } else {
            frac_part
                .parse()
                .map_err(|_| ImsError::malformed("amount is not a number"))?
        };
        let minor = int
            .checked_mul(currency.minor_per_major())
            .and_then(|v| v.checked_add(frac))
            .ok_or_else(|| ImsError::malformed("amount is too large"))?;
        Money::new(currency, minor)
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount in minor units (e.g. cents), always > 0.
    pub fn minor(&self) -> u64 {
        self.minor
    }

    /// The decimal number without currency code, e.g. `1000.00`, `500`.
    pub fn decimal_string(&self) -> String {
        let per = self.currency.minor_per_major();
        let int = self.minor / per;
        let exp = usize::from(self.currency.exponent());
        if exp == 0 {
            format!("{int}")
        } else {
            format!("{int}.{:0exp$}", self.minor % per)
        }
    }
}

/// The canonical string, e.g. `EUR1000.00`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.currency.code(), self.decimal_string())
    }
}

impl FromStr for Money {
    type Err = ImsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ims::error::{CODE_CURRENCY_UNSUPPORTED, CODE_MALFORMED};

    fn cur(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    #[test]
    fn parses_and_formats_canonical_amounts() {
        for (s, code, minor) in [
            ("EUR1000.00", "EUR", 100_000),
            ("EUR0.50", "EUR", 50),
            ("EUR0.01", "EUR", 1),
            ("JPY500", "JPY", 500),
            ("KWD1.000", "KWD", 1000),
            ("BHD12.345", "BHD", 12_345),
            ("CLF0.0001", "CLF", 1),
            ("USD999999999999999.99", "USD", 99_999_999_999_999_999),
            ("UYW999999999999999.9999", "UYW", 9_999_999_999_999_999_999),
        ] {
            let m = Money::parse(s).unwrap();
            assert_eq!(m.currency(), cur(code), "{s}");
            assert_eq!(m.minor(), minor, "{s}");
            assert_eq!(m.to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_amounts() {
        for s in [
            "EUR1000.0",              // too few digits
            "EUR1000.000",            // too many digits
            "EUR1000",                // missing decimals
            "JPY500.00",              // JPY has none
            "KWD1.00",                // KWD has three
            "EUR01.00",               // leading zero
            "EUR00.50",               // leading zeros
            "EUR-1.00",               // negative
            "EUR+1.00",               // sign
            "EUR0.00",                // zero
            "JPY0",                   // zero
            "EUR1e3",                 // exponent
            "EUR1.00e2",              // exponent
            "EUR 1.00",               // space
            "EUR1.00 ",               // space
            "EUR.50",                 // no integer part
            "EUR1,000.00",            // grouping
            "EUR1000000000000000.00", // 16 integer digits
            "eur1.00",                // lowercase
            "EU1.00",                 // short code
            "",                       // empty
            "EUR",                    // no number
            "€1.00",                  // not ASCII
            "EUR١.00",                // non-ASCII digit
        ] {
            let e = Money::parse(s).unwrap_err();
            assert_eq!(e.code, CODE_MALFORMED, "{s}: {e}");
        }
    }

    #[test]
    fn unknown_currency_is_unsupported() {
        for s in ["XXX1.00", "ABC1.00", "XAU1", "HRK1.00"] {
            let e = Money::parse(s).unwrap_err();
            assert_eq!(e.code, CODE_CURRENCY_UNSUPPORTED, "{s}");
        }
    }

    #[test]
    fn new_enforces_invariants() {
        assert!(Money::new(cur("EUR"), 0).is_err());
        assert!(Money::new(cur("EUR"), 100_000_000_000_000_000).is_err());
        assert!(Money::new(cur("EUR"), 99_999_999_999_999_999).is_ok());
        assert!(Money::new(cur("JPY"), 1_000_000_000_000_000).is_err());
    }
}
