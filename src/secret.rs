//! A secret handed out once in an answer (an activation code): serialised
//! into the response body, wiped on drop, never shown by `Debug`.

use zeroize::Zeroizing;

#[derive(Clone)]
pub struct OneTimeSecret(Zeroizing<String>);

impl OneTimeSecret {
    pub fn new(s: Zeroizing<String>) -> OneTimeSecret {
        OneTimeSecret(s)
    }
    /// The secret itself, for the one answer that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for OneTimeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl serde::Serialize for OneTimeSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_serialize_shows() {
        let s = OneTimeSecret::new(Zeroizing::new("12345678".into()));
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"12345678\"");
    }
}
