//! A client kit for tmcs, written from `CONTRACT.md` alone (it does not
//! depend on the service crate):
//!
//! - [`https`]: `awc` HTTPS clients that trust the tmcs CA (`ca.pem`) and
//!   optionally present a client certificate (mTLS roles);
//! - [`handset`]: a handset simulator with the real handset-side crypto of
//!   CONTRACT §7 (device key, `TMCS-Device` header, PIN blocks);
//! - [`pinblock`]: sealing PIN blocks (ECIES on P-256 to the transport key).
//!
//! Used by `tmcs-tools` (demo, benchmark) and by the service's integration tests.

pub mod handset;
pub mod https;
pub mod pinblock;

pub use handset::Handset;
