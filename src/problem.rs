//! Every refusal the service can answer with (CONTRACT §4): a stable code,
//! its HTTP status and title. An unknown code cannot compile; clients build
//! on these, and `docs/errors.md` lists them (a test keeps both equal).

macro_rules! problems {
    ($( $(#[$m:meta])* $variant:ident = ($code:literal, $status:literal, $title:literal), )+) => {
        /// A stable problem code (RFC 9457 `code` member).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Problem { $( $(#[$m])* $variant ),+ }

        impl Problem {
            pub const ALL: &'static [Problem] = &[ $( Problem::$variant ),+ ];

            /// The stable code, e.g. `pin.wrong`.
            pub const fn code(self) -> &'static str {
                match self { $( Problem::$variant => $code ),+ }
            }

            /// The HTTP status it is answered with.
            pub const fn status(self) -> u16 {
                match self { $( Problem::$variant => $status ),+ }
            }

            /// A short human title.
            pub const fn title(self) -> &'static str {
                match self { $( Problem::$variant => $title ),+ }
            }
        }
    };
}

problems! {
    RequestMalformed = ("request.malformed", 400, "The request is malformed"),
    RequestInvalid = ("request.invalid", 400, "A request field is invalid"),
    PayloadTooLarge = ("payload.too_large", 413, "The request body is too large"),
    RequestTimeout = ("request.timeout", 408, "The request body did not arrive in time"),
    TooManyRequests = ("rate.limited", 429, "Too many requests from this client"),
    UnsupportedMediaType = ("unsupported_media_type", 415, "Unsupported content type"),
    NotFound = ("not_found", 404, "No such resource"),
    MethodNotAllowed = ("method_not_allowed", 405, "Method not allowed"),
    AuthUnauthenticated = ("auth.unauthenticated", 401, "A client certificate is required"),
    AuthForbidden = ("auth.forbidden", 403, "Not allowed for this caller"),
    AuthDeviceSignature = ("auth.device_signature", 401, "The device signature is missing or invalid"),
    ServiceUnavailable = ("service.unavailable", 503, "A dependency is unavailable"),
    Internal = ("internal", 500, "Internal error"),
    SubscriberNotFound = ("subscriber.not_found", 404, "No such subscriber"),
    SubscriberExists = ("subscriber.exists", 409, "The subscriber is already registered"),
    SubscriberBlocked = ("subscriber.blocked", 403, "The subscriber is blocked"),
    SubscriberNotActive = ("subscriber.not_active", 409, "The subscriber is not active"),
    ActivationBadCode = ("activation.bad_code", 403, "Wrong activation code"),
    ActivationExpired = ("activation.expired", 403, "The activation code has expired"),
    ActivationNotPending = ("activation.not_pending", 409, "No activation is pending"),
    PinInvalid = ("pin.invalid", 400, "The PIN does not meet the PIN rules"),
    PinTrivial = ("pin.trivial", 400, "The PIN is too easy to guess"),
    PinWrong = ("pin.wrong", 403, "Wrong PIN"),
    PinBlocked = ("pin.blocked", 403, "The PIN is blocked"),
    PinblockInvalid = ("pinblock.invalid", 400, "The PIN block cannot be decrypted or parsed"),
    CertificateNotFound = ("certificate.not_found", 404, "No such certificate"),
    CertificateRevoked = ("certificate.revoked", 409, "The certificate is revoked"),
    CertificateInvalidTransition = ("certificate.invalid_transition", 409, "The certificate cannot make this transition"),
    CertificateNotActive = ("certificate.not_active", 409, "The certificate is not active"),
    CertificateInvalid = ("certificate.invalid", 400, "The certificate or CSR is invalid"),
    PartyExists = ("party.exists", 409, "The party is already registered"),
    PartyNotFound = ("party.not_found", 404, "No such party"),
    ImsMalformed = ("ims.malformed", 400, "The iMS message is malformed"),
    ImsBadSignature = ("ims.bad_signature", 400, "A signature on the iMS message does not verify"),
    ImsUnknownParty = ("ims.unknown_party", 400, "A party of the iMS message is not registered"),
    ImsReplay = ("ims.replay", 409, "This message reference was already used"),
    ImsStale = ("ims.stale", 400, "The iMS timestamp is outside the allowed clock skew"),
    ImsTierMismatch = ("ims.tier_mismatch", 400, "The iMS type does not match the amount's tier"),
    ImsCurrencyUnsupported = ("ims.currency_unsupported", 400, "The currency is not configured"),
    LimitExceeded = ("limit.exceeded", 403, "A payment limit would be exceeded"),
    RequestNotFound = ("request.not_found", 404, "No such signing request"),
    RequestExpired = ("request.expired", 409, "The signing request has expired"),
    RequestNotPending = ("request.not_pending", 409, "The signing request is not pending"),
    RequestConflict = ("request.conflict", 409, "The request is in another state"),
    RequestNotSigned = ("request.not_signed", 409, "The signing request was never signed"),
    ReceiptNotReady = ("receipt.not_ready", 404, "The payment has not ended yet"),
    DeliveryNotFound = ("delivery.not_found", 404, "No such relay delivery"),
    DeliveryNotFailed = ("delivery.not_failed", 409, "Only a failed delivery can be retried"),
    SadMismatch = ("sad.mismatch", 403, "The authorisation does not match the request"),
    InstrumentUnknown = ("instrument.unknown", 404, "No such active payment instrument"),
    InstrumentExists = ("instrument.exists", 409, "The alias names another instrument"),
    InstrumentBadAmount = ("instrument.bad_amount", 403, "Wrong amount"),
    InstrumentBlocked = ("instrument.blocked", 403, "The instrument is blocked"),
    InstrumentNotVerifying = ("instrument.not_verifying", 409, "The instrument is not waiting for its amount"),
    InstrumentUnavailable = ("instrument.unavailable", 409, "Payment instruments are not available"),
    AuditRangeInvalid = ("audit.range_invalid", 400, "The seq or tree size is outside the audit log"),
    AuditSthNotFound = ("audit.sth_not_found", 404, "No signed tree head of that size"),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_statuses_valid() {
        let mut seen = std::collections::HashSet::new();
        for p in Problem::ALL {
            assert!(seen.insert(p.code()), "duplicate code {p}");
            assert!((400..600).contains(&p.status()), "{p}");
            assert!(!p.title().is_empty());
        }
    }

    /// The OpenAPI document's `ProblemCode` enum names exactly these codes.
    #[test]
    fn openapi_lists_every_code() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
        let listed: std::collections::BTreeSet<String> = doc["components"]["schemas"]
            ["ProblemCode"]["enum"]
            .as_array()
            .expect("components.schemas.ProblemCode.enum")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let ours: std::collections::BTreeSet<String> =
            Problem::ALL.iter().map(|p| p.code().to_string()).collect();
        assert_eq!(listed, ours);
    }

    /// docs/errors.md documents every code, with its status.
    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../docs/errors.md");
        for p in Problem::ALL {
            assert!(
                doc.contains(&format!("`{}`", p.code())),
                "docs/errors.md lacks {p}"
            );
        }
    }
}
