//! The states of the domain as types: a request's status, a subscriber's
//! state, a certificate's status (which parties and mTLS identities
//! mirror), a party's kind. Each is stored as text on both backends, with a
//! `CHECK` constraint listing exactly these values (migration
//! `…000005_typed_states`). This is the only module that spells them.
//!
//! The request lifecycle is one transition table, [`RequestStatus::TRANSITIONS`]:
//!
//! ```text
//! pending_authorization ─claim─▶ signing ─▶ signed ─▶ relayed ─▶ settled
//!     │  │                         │  │        │          │  └──▶ rolled_back
//!     │  └▶ declined               │  └▶ failed◀──────────┘
//!     └───▶ expired ◀──────────────┘  (a claim whose signature never got stored)
//! ```
//!
//! The store refuses any other change (`store::requests::transition`).

use std::fmt;
use std::str::FromStr;

/// A stored value that is not one of the enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: unknown value {value:?}")]
pub struct UnknownState {
    pub what: &'static str,
    pub value: String,
}

macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal) { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The stored and wire form.
            pub const fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text ),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    other => Err(UnknownState { what: $what, value: other.chars().take(40).collect() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownState;
            fn try_from(s: String) -> Result<Self, UnknownState> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

text_enum! {
    /// Where a signing request is (CONTRACT §6 and §11).
    RequestStatus ("request status") {
        PendingAuthorization = "pending_authorization",
        /// Claimed for the one signature; never shown outside (see [`RequestStatus::public`]).
        Signing = "signing",
        Signed = "signed",
        Relayed = "relayed",
        Settled = "settled",
        RolledBack = "rolled_back",
        Declined = "declined",
        Expired = "expired",
        Failed = "failed",
    }
}

impl RequestStatus {
    /// Every allowed change, and only those.
    pub const TRANSITIONS: &'static [(RequestStatus, RequestStatus)] = {
        use RequestStatus::*;
        &[
            (PendingAuthorization, Signing),
            (PendingAuthorization, Declined),
            (PendingAuthorization, Expired),
            (Signing, Signed),
            (Signing, Failed),
            (Signing, Expired),
            (Signed, Relayed),
            (Signed, Failed),
            (Relayed, Settled),
            (Relayed, RolledBack),
            (Relayed, Failed),
            // A delivery that gave up and is retried by the operator: the
            // request moves on from `failed` once it goes through (only a
            // request with a signature has deliveries).
            (Failed, Relayed),
            (Failed, Settled),
            (Failed, RolledBack),
        ]
    };

    /// Whether the lifecycle allows `self → to`.
    pub fn can_become(self, to: RequestStatus) -> bool {
        Self::TRANSITIONS.contains(&(self, to))
    }

    /// Statuses that count against the payer's limits (not declined,
    /// expired, failed or rolled back).
    pub const COUNTING: &'static [RequestStatus] = &[
        RequestStatus::PendingAuthorization,
        RequestStatus::Signing,
        RequestStatus::Signed,
        RequestStatus::Relayed,
        RequestStatus::Settled,
    ];

    /// Whether a request in this status counts against the payer's limits
    /// (one of [`RequestStatus::COUNTING`]).
    pub fn counts(self) -> bool {
        Self::COUNTING.contains(&self)
    }

    /// Still waiting for the handset, or claimed for signing: the only
    /// statuses that expire.
    pub const AWAITING: &'static [RequestStatus] =
        &[RequestStatus::PendingAuthorization, RequestStatus::Signing];

    /// The status callers see: `signing` is an internal instant and reads as
    /// `pending_authorization`.
    pub fn public(self) -> RequestStatus {
        match self {
            RequestStatus::Signing => RequestStatus::PendingAuthorization,
            s => s,
        }
    }

    /// The status a reader should report for a row read at `now`: one still
    /// awaiting authorisation past its expiry is `expired`, whether or not
    /// the sweeper has recorded it yet. Reads never write.
    pub fn seen_at(self, expires_at: i64, now: i64) -> RequestStatus {
        match self {
            RequestStatus::PendingAuthorization if expires_at < now => RequestStatus::Expired,
            s => s.public(),
        }
    }

    /// No transition leaves this status.
    pub fn is_final(self) -> bool {
        !Self::TRANSITIONS.iter().any(|(from, _)| *from == self)
    }

    /// Where a payment ends (CONTRACT §11: the receipt's statuses; `failed`
    /// may still move on if the operator retries the delivery).
    pub const ENDED: &'static [RequestStatus] = &[
        RequestStatus::Settled,
        RequestStatus::RolledBack,
        RequestStatus::Failed,
    ];
}

text_enum! {
    /// A subscriber's state (Y.2741 registration, activation, disconnection).
    SubscriberState ("subscriber state") {
        PendingActivation = "pending_activation",
        Active = "active",
        Blocked = "blocked",
        /// Disconnected; may be registered again.
        Archived = "archived",
    }
}

text_enum! {
    /// A certificate's lifecycle status (X.1122). Parties and mTLS identities
    /// carry the status of their certificate.
    CertStatus ("certificate status") {
        Active = "active",
        /// On hold (certificateHold): may be resumed.
        Suspended = "suspended",
        Revoked = "revoked",
        /// Past its notAfter (the sweeper records it).
        Expired = "expired",
    }
}

text_enum! {
    /// What a registered party is (CONTRACT §8).
    PartyKind ("party kind") {
        Merchant = "merchant",
        Fsp = "fsp",
        Bank = "bank",
        Gateway = "gateway",
    }
}

text_enum! {
    /// The role of an mTLS client certificate (CONTRACT §3).
    Role ("client role") {
        Operator = "operator",
        Auditor = "auditor",
        Fsp = "fsp",
        Gateway = "gateway",
    }
}

text_enum! {
    /// What a relay delivery carries (CONTRACT §11, header `TMCS-Event`).
    DeliveryEvent ("delivery event") {
        /// The signed iMS, to the FSP that submitted it.
        Signed = "signed",
        /// The ISO 20022 pain.001, to the bank (mode `fsp+bank`).
        Instruction = "instruction",
        /// The final status, to the FSP and the merchant.
        Outcome = "outcome",
        /// An instrument's micro-amount reserved at the bank (CONTRACT §12;
        /// a direct call, never queued: the amount is not stored).
        Reserve = "reserve",
        /// The reservation ended (`DELETE …/reservations/{id}`).
        Release = "release",
    }
}

text_enum! {
    /// Where a delivery is in the outbox.
    DeliveryStatus ("delivery status") {
        /// Waiting for its next attempt.
        Pending = "pending",
        /// Claimed by a node (leased) and being sent.
        Delivering = "delivering",
        Delivered = "delivered",
        /// Gave up after `relay.max_attempts`, or refused by the receiver.
        Failed = "failed",
    }
}

text_enum! {
    /// Where a payment instrument is (CONTRACT §12).
    InstrumentStatus ("instrument status") {
        /// Stored; the bank is being asked to reserve the amount.
        Requested = "requested",
        /// Reserved; waiting for the subscriber to confirm the amount.
        Verifying = "verifying",
        Active = "active",
        /// The bank refused the reservation, or could not be reached.
        Rejected = "rejected",
        /// Three wrong amounts.
        Blocked = "blocked",
        /// Not confirmed within `relay.instrument_ttl_seconds`.
        Expired = "expired",
        /// Taken out of use by its subscriber (Y.2741 6.4.1.4).
        Disconnected = "disconnected",
    }
}

impl InstrumentStatus {
    /// The statuses in which an alias is taken (`instruments_alias`).
    pub const LIVE: &'static [InstrumentStatus] = &[
        InstrumentStatus::Requested,
        InstrumentStatus::Verifying,
        InstrumentStatus::Active,
    ];
}

impl DeliveryStatus {
    /// The status operators see: `delivering` (leased, in flight) is `pending`.
    pub fn public(self) -> DeliveryStatus {
        match self {
            DeliveryStatus::Delivering => DeliveryStatus::Pending,
            s => s,
        }
    }
}

impl PartyKind {
    /// The mTLS role a party of this kind gets, if any.
    pub fn mtls_role(self) -> Option<Role> {
        match self {
            PartyKind::Fsp => Some(Role::Fsp),
            PartyKind::Gateway => Some(Role::Gateway),
            PartyKind::Merchant | PartyKind::Bank => None,
        }
    }
}

/// `'a', 'b', …` for a SQL `CHECK (x IN (…))` of `values` (tests compare it
/// with the migrations).
pub fn sql_list(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("'{v}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for s in RequestStatus::ALL {
            assert_eq!(s.as_str().parse::<RequestStatus>().unwrap(), *s);
            assert_eq!(String::from(*s), s.to_string());
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        for s in SubscriberState::ALL {
            assert_eq!(s.as_str().parse::<SubscriberState>().unwrap(), *s);
        }
        for s in CertStatus::ALL {
            assert_eq!(s.as_str().parse::<CertStatus>().unwrap(), *s);
        }
        for s in PartyKind::ALL {
            assert_eq!(s.as_str().parse::<PartyKind>().unwrap(), *s);
        }
        let e = "nope".parse::<RequestStatus>().unwrap_err();
        assert_eq!(e.to_string(), "request status: unknown value \"nope\"");
        assert!(serde_json::from_str::<CertStatus>("\"bogus\"").is_err());
    }

    #[test]
    fn the_request_lifecycle() {
        use RequestStatus::*;
        assert!(PendingAuthorization.can_become(Signing));
        assert!(Signing.can_become(Signed));
        assert!(!Signed.can_become(PendingAuthorization));
        assert!(
            !Signed.can_become(Expired),
            "a signed request never expires"
        );
        assert!(
            !PendingAuthorization.can_become(Signed),
            "no signature without a claim"
        );
        assert!(!Expired.can_become(Signing));
        for s in [Settled, RolledBack, Declined, Expired] {
            assert!(s.is_final(), "{s}");
        }
        assert!(!Failed.is_final(), "a failed relay may be retried");
        for s in [PendingAuthorization, Signing, Signed, Relayed] {
            assert!(!s.is_final(), "{s}");
        }
        // Every status but the first is reachable from pending_authorization.
        let mut seen = vec![PendingAuthorization];
        let mut i = 0;
        while let Some(s) = seen.get(i).copied() {
            for (from, to) in RequestStatus::TRANSITIONS {
                if *from == s && !seen.contains(to) {
                    seen.push(*to);
                }
            }
            i += 1;
        }
        assert_eq!(seen.len(), RequestStatus::ALL.len());
    }

    /// The CHECK constraints of migration 000005 list exactly each enum's
    /// values, on both backends.
    #[test]
    fn check_constraints_match_the_enums() {
        fn texts<T: Copy>(all: &[T], f: fn(T) -> &'static str) -> Vec<&'static str> {
            all.iter().map(|v| f(*v)).collect()
        }
        let pg = include_str!("../migrations/postgresql/2026-12-02-000005_typed_states/up.sql");
        let lite = include_str!("../migrations/sqlite/2026-12-02-000005_typed_states/up.sql");
        let checks = [
            ("status", texts(RequestStatus::ALL, RequestStatus::as_str)),
            (
                "state",
                texts(SubscriberState::ALL, SubscriberState::as_str),
            ),
            ("status", texts(CertStatus::ALL, CertStatus::as_str)),
            ("kind", texts(PartyKind::ALL, PartyKind::as_str)),
            ("role", texts(Role::ALL, Role::as_str)),
        ];
        for (column, values) in checks {
            let clause = format!("{column} IN ({})", sql_list(&values));
            assert!(pg.contains(&clause), "PostgreSQL lacks CHECK ({clause})");
            assert!(lite.contains(&clause), "SQLite lacks CHECK ({clause})");
        }
    }

    /// Migration 000010 fills the running daily totals from the requests in
    /// exactly the counting statuses, on both backends; the transitions that
    /// move a total are those that cross that set.
    #[test]
    fn daily_totals_count_the_counting_statuses() {
        let values: Vec<&str> = RequestStatus::COUNTING.iter().map(|s| s.as_str()).collect();
        let clause = format!("status IN ({})", sql_list(&values));
        for up in [
            include_str!("../migrations/postgresql/2026-12-02-000010_daily_totals/up.sql"),
            include_str!("../migrations/sqlite/2026-12-02-000010_daily_totals/up.sql"),
        ] {
            assert!(up.contains(&clause), "the backfill lacks {clause}");
        }
        use RequestStatus::*;
        let crossing: Vec<_> = RequestStatus::TRANSITIONS
            .iter()
            .filter(|(from, to)| from.counts() != to.counts())
            .copied()
            .collect();
        assert_eq!(
            crossing,
            [
                (PendingAuthorization, Declined),
                (PendingAuthorization, Expired),
                (Signing, Failed),
                (Signing, Expired),
                (Signed, Failed),
                (Relayed, RolledBack),
                (Relayed, Failed),
                (Failed, Relayed),
                (Failed, Settled),
            ]
        );
    }

    #[test]
    fn what_readers_see() {
        use RequestStatus::*;
        assert_eq!(Signing.public(), PendingAuthorization);
        assert_eq!(PendingAuthorization.seen_at(100, 100), PendingAuthorization);
        assert_eq!(PendingAuthorization.seen_at(100, 101), Expired);
        assert_eq!(Signing.seen_at(100, 101), PendingAuthorization);
        assert_eq!(Signed.seen_at(100, 101), Signed);
    }
}
