//! Property tests: serialise→parse round trip for valid messages, and the
//! parser never panics on arbitrary or mutated input.

use proptest::prelude::*;
use time::OffsetDateTime;

use super::*;

/// 9999-12-31T23:59:59Z
const MAX_UNIX: i64 = 253_402_300_799;

fn tier() -> impl Strategy<Value = Tier> {
    prop_oneof![Just(Tier::Small), Just(Tier::Medium), Just(Tier::Large)]
}

fn reference() -> impl Strategy<Value = Option<Ref>> {
    proptest::option::of("[A-Za-z0-9._-]{1,64}".prop_map(|s| Ref::new(&s).unwrap()))
}

fn named(roles: Vec<PartyRole>) -> impl Strategy<Value = PartyId> {
    (
        "[A-Za-z0-9._-]{1,64}",
        proptest::sample::select(roles),
        "[a-z0-9-]{1,63}",
    )
        .prop_map(|(local, role, domain)| PartyId::Named {
            local,
            role,
            domain,
        })
}

fn tel() -> impl Strategy<Value = PartyId> {
    "[1-9][0-9]{7,14}".prop_map(|d| PartyId::Tel(format!("+{d}")))
}

fn payer() -> impl Strategy<Value = PartyId> {
    prop_oneof![named(vec![PartyRole::Person]), tel()]
}

fn payee() -> impl Strategy<Value = PartyId> {
    prop_oneof![named(vec![PartyRole::Person, PartyRole::Merchant]), tel()]
}

fn signature() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 1..=80),
        1 => proptest::collection::vec(any::<u8>(), 1..=MAX_SIGNATURE_BYTES),
    ])
}

fn timestamp() -> impl Strategy<Value = OffsetDateTime> {
    (0..=MAX_UNIX).prop_map(|s| OffsetDateTime::from_unix_timestamp(s).unwrap())
}

fn account() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:/-]{1,64}"
}

fn money() -> impl Strategy<Value = Money> {
    (0..Currency::all().len()).prop_flat_map(|i| {
        let cur = Currency::all()[i];
        let max = 10u64.pow(15) * cur.minor_per_major() - 1;
        prop_oneof![1..=10_000u64, 1..=max].prop_map(move |minor| Money::new(cur, minor).unwrap())
    })
}

prop_compose! {
    fn message()(
        tier in tier(),
        reference in reference(),
        from in payer(),
        from_sign in signature(),
        to in payee(),
        to_sign in signature(),
        fsp_sign in signature(),
        timestamp in timestamp(),
        account_payable in account(),
        account_receivable in account(),
        amount in money(),
    ) -> ImsMessage {
        ImsMessage {
            tier, reference, from, from_sign, to, to_sign, fsp_sign, timestamp,
            account_payable, account_receivable, amount,
        }
    }
}

/// Fragments that exercise the parser's rejection paths.
const FRAGMENTS: &[&str] = &[
    "<!DOCTYPE iMS [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>",
    "&x;",
    "&amp;",
    "&#10;",
    "&#x0;",
    "&",
    "<![CDATA[x]]>",
    "<!-- c -->",
    "<?pi x?>",
    "<?xml version=\"1.0\"?>",
    "<a>",
    "</a>",
    "<a/>",
    "</iMS>",
    "<iMS>",
    "<sign>",
    "</sign>",
    " x=\"1\"",
    "\r\n",
    "\u{0}",
    "é",
    "\u{feff}",
    "<",
    ">",
    "\"",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Replace(usize, u8),
    Insert(usize, u8),
    InsertFragment(usize, usize),
    Duplicate(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..16usize).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Replace(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 0..FRAGMENTS.len()).prop_map(|(p, f)| Mutation::InsertFragment(p, f)),
        (any::<usize>(), 1..64usize, any::<usize>())
            .prop_map(|(p, n, q)| Mutation::Duplicate(p, n, q)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        let at = |p: usize| if len == 0 { 0 } else { p % (len + 1) };
        match *m {
            Mutation::Delete(p, n) => {
                let start = at(p).min(len);
                let end = (start + n).min(len);
                bytes.drain(start..end);
            }
            Mutation::Replace(p, b) => {
                if len > 0 {
                    bytes[p % len] = b;
                }
            }
            Mutation::Insert(p, b) => bytes.insert(at(p), b),
            Mutation::InsertFragment(p, f) => {
                let pos = at(p);
                bytes.splice(pos..pos, FRAGMENTS[f].bytes());
            }
            Mutation::Duplicate(p, n, q) => {
                let start = at(p).min(len);
                let end = (start + n).min(len);
                let slice: Vec<u8> = bytes[start..end].to_vec();
                let pos = at(q);
                bytes.splice(pos..pos, slice);
            }
        }
    }
    bytes
}

proptest! {
    #[test]
    fn serialize_parse_round_trip(m in message()) {
        let xml = m.to_xml();
        prop_assert!(xml.len() <= MAX_IMS_BYTES);
        let parsed = ImsMessage::parse(xml.as_bytes());
        prop_assert_eq!(parsed.as_ref(), Ok(&m));
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.canonical_m(), m.canonical_m());
        prop_assert_eq!(parsed.canonical_c().ok(), m.canonical_c().ok());
        // The canonical M is exactly seven lines with the normalised values.
        let cm = String::from_utf8(m.canonical_m()).unwrap();
        prop_assert_eq!(cm.lines().count(), 7);
        let amount_line = format!("amount:{}\n", m.amount);
        prop_assert!(cm.ends_with(&amount_line));
    }

    #[test]
    fn compact_and_paper_forms_parse_the_same(m in message()) {
        // Without indentation, with the paper timestamp form.
        let ts = m.timestamp;
        let paper = format!(
            "{:02}.{:02}.{:04} {:02}:{:02}:{:02}",
            ts.day(), u8::from(ts.month()), ts.year(), ts.hour(), ts.minute(), ts.second()
        );
        let xml: String = m.to_xml().lines().map(str::trim).collect();
        let xml = xml.replace(&m.timestamp_str(), &paper);
        prop_assert_eq!(ImsMessage::parse(xml.as_bytes()), Ok(m));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ImsMessage::parse(&data);
        crate::ims::fuzz::fuzz_parse(&data);
    }

    #[test]
    fn xmlish_strings_never_panic(s in "[<>/!?&;#a-zA-Z0-9\\[\\] =\"'\r\n-]{0,512}") {
        let _ = ImsMessage::parse(s.as_bytes());
        crate::ims::fuzz::fuzz_parse(s.as_bytes());
    }

    #[test]
    fn mutated_messages_never_panic(
        m in message(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let bytes = apply(m.to_xml().into_bytes(), &mutations);
        // Either an error or a message that survives a round trip.
        let _ = ImsMessage::parse(&bytes);
        crate::ims::fuzz::fuzz_parse(&bytes);
    }
}
