//! The iMS message (CONTRACT §5): strict parser, serialiser and the
//! canonical signing inputs `ims-c1`.
//!
//! ```text
//! <iMS>
//!   <type>medium</type>
//!   <ref>POS-7-000123</ref>
//!   <address>
//!     <from><id>John.Bernard@person.xbank</id><sign></sign></from>
//!     <to><id>Merkur.Trade@merchant.xbank</id><sign>BASE64</sign></to>
//!     <FSPsign>BASE64</FSPsign>
//!     <timestamp>2002-05-27T12:34:34Z</timestamp>
//!   </address>
//!   <data>
//!     <accountPayable>1234-5678-9abc</accountPayable>
//!     <accountReceivable>9876-543-21de</accountReceivable>
//!     <amount>EUR1000.00</amount>
//!   </data>
//! </iMS>
//! ```
//!
//! See [`parse`] for the exact parser rules. Where the contract is silent:
//! * elements must appear in the order above (`ref` optional);
//! * comments, CDATA and numeric character references are rejected;
//! * timestamps: RFC 3339 with any offset (converted to UTC) or
//!   `DD.MM.YYYY HH:MM:SS` (UTC); fractional seconds rejected; year 1970–9999;
//! * accounts: 1–64 of `[A-Za-z0-9._:/-]`;
//! * signatures: empty → `None`, else standard padded base64 of 1–1024 bytes;
//! * `tel:` ids: `+` and 8–15 digits, first digit not `0`;
//! * `to` may be a merchant, a person (P2P) or a `tel:` id; `from` a person
//!   or a `tel:` id.
//!
//! Policy checks (tier vs. amount, clock skew, configured currencies,
//! signatures) are not done here.

mod canonical;
pub mod currency;
pub mod error;
pub mod fields;
pub mod fuzz;
pub mod money;
pub mod parse;
pub mod party;
mod serialize;
pub mod timestamp;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use time::OffsetDateTime;

pub use currency::Currency;
pub use error::{ImsError, CODE_CURRENCY_UNSUPPORTED, CODE_MALFORMED, CODE_TOO_LARGE};
pub use fields::{Ref, Tier};
pub use money::Money;
pub use parse::MAX_SIGNATURE_BYTES;
pub use party::{PartyId, PartyRole};

/// Maximum size of an iMS message in bytes.
pub const MAX_IMS_BYTES: usize = 16 * 1024;

/// A parsed, validated iMS message.
///
/// Values produced by [`ImsMessage::parse`] are normalised: the timestamp is
/// UTC with whole seconds, empty signatures are `None`. For such values
/// `ImsMessage::parse(m.to_xml().as_bytes()) == Ok(m)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImsMessage {
    /// `type`: the tier claimed by the sender.
    pub tier: Tier,
    /// `ref`: optional merchant reference.
    pub reference: Option<Ref>,
    /// `address/from/id`: the payer.
    pub from: PartyId,
    /// `address/from/sign`: the payer's signature over `C` (added by tmcs).
    pub from_sign: Option<Vec<u8>>,
    /// `address/to/id`: the payee.
    pub to: PartyId,
    /// `address/to/sign`: the merchant's signature over `M`.
    pub to_sign: Option<Vec<u8>>,
    /// `address/FSPsign`: the FSP's signature over `F`.
    pub fsp_sign: Option<Vec<u8>>,
    /// `address/timestamp`, UTC, whole seconds.
    pub timestamp: OffsetDateTime,
    /// `data/accountPayable`.
    pub account_payable: String,
    /// `data/accountReceivable`.
    pub account_receivable: String,
    /// `data/amount`.
    pub amount: Money,
}

impl ImsMessage {
    /// Parses and validates an iMS (see [`parse`] for the rules).
    ///
    /// Errors: `payload.too_large` above [`MAX_IMS_BYTES`],
    /// `ims.currency_unsupported` for an unknown currency code,
    /// `ims.malformed` otherwise.
    pub fn parse(xml: &[u8]) -> Result<ImsMessage, ImsError> {
        parse::parse(xml)
    }

    /// Serialises to XML in the contract's layout.
    pub fn to_xml(&self) -> String {
        serialize::to_xml(self)
    }

    /// The normalised timestamp `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn timestamp_str(&self) -> String {
        timestamp::format_timestamp(self.timestamp)
    }

    /// `M`: what the merchant signs (`to/sign`).
    pub fn canonical_m(&self) -> Vec<u8> {
        canonical::canonical_m(self)
    }

    /// `F`: what the FSP signs (`FSPsign`). Needs `to_sign`.
    pub fn canonical_f(&self) -> Result<Vec<u8>, ImsError> {
        canonical::canonical_f(self)
    }

    /// `C`: what tmcs signs with the payer's key (`from/sign`). Needs
    /// `to_sign` and `fsp_sign`.
    pub fn canonical_c(&self) -> Result<Vec<u8>, ImsError> {
        canonical::canonical_c(self)
    }
}
