//! Error type of the iMS module.

use std::fmt;

use crate::problem::Problem;

/// Stable error code: the message is not a well-formed, valid iMS.
pub const CODE_MALFORMED: Problem = Problem::ImsMalformed;
/// Stable error code: the message exceeds [`super::MAX_IMS_BYTES`].
pub const CODE_TOO_LARGE: Problem = Problem::PayloadTooLarge;
/// Stable error code: the amount uses a currency code that is not in the ISO 4217 table.
pub const CODE_CURRENCY_UNSUPPORTED: Problem = Problem::ImsCurrencyUnsupported;

/// Maximum number of characters of input that may ever appear in an error
/// message (element names only; values are never echoed).
const MAX_FRAGMENT_CHARS: usize = 32;

/// An error from parsing or processing an iMS message.
///
/// `code` is one of [`CODE_MALFORMED`], [`CODE_TOO_LARGE`] and
/// [`CODE_CURRENCY_UNSUPPORTED`]. `element` names the element that failed
/// (e.g. `amount`, `from/id`), and `message` says why. Neither ever contains
/// more than a short, sanitised fragment of the input (see [`sanitize`]);
/// values are never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}", .code, ElementAt(.element), .message)]
pub struct ImsError {
    /// Stable machine-readable code.
    pub code: Problem,
    /// The element that failed, if known.
    pub element: Option<String>,
    /// Human-readable reason; never echoes input values.
    pub message: String,
}

struct ElementAt<'a>(&'a Option<String>);

impl fmt::Display for ElementAt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(e) => write!(f, " at <{e}>"),
            None => Ok(()),
        }
    }
}

impl ImsError {
    /// An `ims.malformed` error without element.
    pub fn malformed(message: impl Into<String>) -> Self {
        ImsError {
            code: CODE_MALFORMED,
            element: None,
            message: message.into(),
        }
    }

    /// An `ims.malformed` error naming `element` (sanitised).
    pub fn malformed_at(element: &str, message: impl Into<String>) -> Self {
        ImsError::malformed(message).at(element)
    }

    /// A `payload.too_large` error.
    pub fn too_large(len: usize, max: usize) -> Self {
        ImsError {
            code: CODE_TOO_LARGE,
            element: None,
            message: format!("message is {len} bytes, at most {max} allowed"),
        }
    }

    /// An `ims.currency_unsupported` error.
    pub fn currency_unsupported() -> Self {
        ImsError {
            code: CODE_CURRENCY_UNSUPPORTED,
            element: None,
            message: "currency code is not supported".to_owned(),
        }
    }

    /// Sets (or replaces) the element this error refers to (sanitised).
    #[must_use]
    pub fn at(mut self, element: &str) -> Self {
        self.element = Some(sanitize(element));
        self
    }
}

/// Reduces an input fragment to something safe to show: at most 32
/// characters, each outside `[A-Za-z0-9._:/@+-]` replaced by `?`, with `…`
/// appended when truncated.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_FRAGMENT_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:/@+-".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().nth(MAX_FRAGMENT_CHARS).is_some() {
        out.push('…');
    }
    out
}
