//! Unit tests for parsing, serialising and the canonical inputs.

use time::macros::datetime;

use super::*;

const TO_SIGN_B64: &str = "TWVya3VyU2ln"; // "MerkurSig"
const FSP_SIGN_B64: &str = "RlNQc2lnbmF0dXJl"; // "FSPsignature"

/// The contract example with concrete signatures.
fn example_xml() -> String {
    format!(
        "<iMS>
  <type>medium</type>
  <ref>POS-7-000123</ref>
  <address>
    <from><id>John.Bernard@person.xbank</id><sign></sign></from>
    <to><id>Merkur.Trade@merchant.xbank</id><sign>{TO_SIGN_B64}</sign></to>
    <FSPsign>{FSP_SIGN_B64}</FSPsign>
    <timestamp>2002-05-27T12:34:34Z</timestamp>
  </address>
  <data>
    <accountPayable>1234-5678-9abc</accountPayable>
    <accountReceivable>9876-543-21de</accountReceivable>
    <amount>EUR1000.00</amount>
  </data>
</iMS>
"
    )
}

fn example_msg() -> ImsMessage {
    ImsMessage {
        tier: Tier::Medium,
        reference: Some(Ref::new("POS-7-000123").unwrap()),
        from: PartyId::Named {
            local: "John.Bernard".into(),
            role: PartyRole::Person,
            domain: "xbank".into(),
        },
        from_sign: None,
        to: PartyId::Named {
            local: "Merkur.Trade".into(),
            role: PartyRole::Merchant,
            domain: "xbank".into(),
        },
        to_sign: Some(b"MerkurSig".to_vec()),
        fsp_sign: Some(b"FSPsignature".to_vec()),
        timestamp: datetime!(2002-05-27 12:34:34 UTC),
        account_payable: "1234-5678-9abc".into(),
        account_receivable: "9876-543-21de".into(),
        amount: Money::new(Currency::from_code("EUR").unwrap(), 100_000).unwrap(),
    }
}

/// Replaces exactly one occurrence of `from` (which must exist) in the example.
fn example_with(from: &str, to: &str) -> String {
    let xml = example_xml();
    assert_eq!(xml.matches(from).count(), 1, "template lacks {from:?}");
    xml.replacen(from, to, 1)
}

fn parse_str(s: &str) -> Result<ImsMessage, ImsError> {
    ImsMessage::parse(s.as_bytes())
}

#[track_caller]
fn assert_malformed(xml: &str, element: Option<&str>) -> ImsError {
    let err = parse_str(xml).expect_err("accepted");
    assert_eq!(err.code, CODE_MALFORMED, "{err}");
    if let Some(el) = element {
        assert_eq!(err.element.as_deref(), Some(el), "{err}");
    }
    err
}

// ---------------------------------------------------------------- accepted

#[test]
fn contract_example_parses() {
    assert_eq!(parse_str(&example_xml()).unwrap(), example_msg());
}

#[test]
fn serializer_emits_contract_layout() {
    assert_eq!(example_msg().to_xml(), example_xml());
}

#[test]
fn xml_declaration_at_start_is_allowed() {
    for decl in [
        "<?xml version=\"1.0\"?>\n",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "<?xml version='1.0' encoding='utf-8' standalone='yes'?>",
    ] {
        let xml = format!("{decl}{}", example_xml());
        assert_eq!(parse_str(&xml).unwrap(), example_msg(), "{decl}");
    }
}

#[test]
fn bad_xml_declarations_are_rejected() {
    for decl in [
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>",
        "<?xml version=\"1.1\"?>",
        "<?xml encoding=\"UTF-8\"?>",
        "<?xml version=\"1.0\" foo=\"bar\"?>",
        " <?xml version=\"1.0\"?>",
        "\n<?xml version=\"1.0\"?>",
    ] {
        assert_malformed(&format!("{decl}{}", example_xml()), None);
    }
    // A second declaration later on.
    assert_malformed(
        &example_with("<data>", "<?xml version=\"1.0\"?><data>"),
        None,
    );
}

#[test]
fn paper_timestamp_form_is_read_as_utc() {
    let m = parse_str(&example_with("2002-05-27T12:34:34Z", "27.05.2002 12:34:34")).unwrap();
    assert_eq!(m, example_msg());
    assert_eq!(m.timestamp_str(), "2002-05-27T12:34:34Z");
}

#[test]
fn rfc3339_offsets_are_normalised_to_utc() {
    let m = parse_str(&example_with(
        "2002-05-27T12:34:34Z",
        "2002-05-27T14:34:34+02:00",
    ))
    .unwrap();
    assert_eq!(m, example_msg());
    assert_eq!(m.timestamp.offset(), time::UtcOffset::UTC);
    assert!(m
        .to_xml()
        .contains("<timestamp>2002-05-27T12:34:34Z</timestamp>"));
}

#[test]
fn optional_ref_and_whitespace_are_handled() {
    let xml = example_with("  <ref>POS-7-000123</ref>\n", "");
    let m = parse_str(&xml).unwrap();
    assert_eq!(m.reference, None);
    assert_eq!(parse_str(&m.to_xml()).unwrap(), m);
    assert!(!m.to_xml().contains("<ref>"));

    // Values are trimmed of XML whitespace, including CR/LF around them.
    let m = parse_str(&example_with(
        "<amount>EUR1000.00</amount>",
        "<amount>\r\n\t EUR1000.00 \n</amount>",
    ))
    .unwrap();
    assert_eq!(m, example_msg());
    // The paper's leading space in a signature.
    let m = parse_str(&example_with(
        &format!("<sign>{TO_SIGN_B64}</sign>"),
        &format!("<sign> {TO_SIGN_B64}</sign>"),
    ))
    .unwrap();
    assert_eq!(m, example_msg());
}

#[test]
fn compact_document_and_self_closing_sign() {
    let xml = example_xml()
        .lines()
        .map(str::trim)
        .collect::<String>()
        .replace("<sign></sign>", "<sign/>");
    assert_eq!(parse_str(&xml).unwrap(), example_msg());
}

#[test]
fn tel_and_p2p_parties() {
    let xml = example_with("John.Bernard@person.xbank", "tel:+4912345678");
    let xml = xml.replace("Merkur.Trade@merchant.xbank", "Jane@person.ybank");
    let m = parse_str(&xml).unwrap();
    assert_eq!(m.from, PartyId::Tel("+4912345678".into()));
    assert_eq!(m.to.role(), Some(PartyRole::Person));
    assert_eq!(parse_str(&m.to_xml()).unwrap(), m);
}

#[test]
fn signatures_decode_standard_base64() {
    let m = parse_str(&example_with("<sign></sign>", "<sign>+/+/</sign>")).unwrap();
    assert_eq!(m.from_sign, Some(vec![0xfb, 0xff, 0xbf]));
    let m = parse_str(&example_with(
        &format!("<FSPsign>{FSP_SIGN_B64}</FSPsign>"),
        "<FSPsign></FSPsign>",
    ))
    .unwrap();
    assert_eq!(m.fsp_sign, None);
    assert!(m.to_xml().contains("<FSPsign></FSPsign>"));
}

#[test]
fn other_currencies() {
    for (amount, minor) in [("JPY500", 500u64), ("KWD1.000", 1000), ("CLF0.0001", 1)] {
        let m = parse_str(&example_with("EUR1000.00", amount)).unwrap();
        assert_eq!(m.amount.minor(), minor);
        assert_eq!(m.amount.to_string(), amount);
    }
}

// ---------------------------------------------------------------- canonical

const EXPECTED_M: &str = "ims-c1\n\
type:medium\n\
ref:POS-7-000123\n\
from.id:John.Bernard@person.xbank\n\
to.id:Merkur.Trade@merchant.xbank\n\
timestamp:2002-05-27T12:34:34Z\n\
amount:EUR1000.00\n";

#[test]
fn canonical_inputs_are_byte_exact() {
    let m = parse_str(&example_xml()).unwrap();
    assert_eq!(m.canonical_m(), EXPECTED_M.as_bytes());
    let expected_f = format!(
        "{EXPECTED_M}accountPayable:1234-5678-9abc\naccountReceivable:9876-543-21de\nto.sign:TWVya3VyU2ln\n"
    );
    assert_eq!(m.canonical_f().unwrap(), expected_f.as_bytes());
    let expected_c = format!("{expected_f}fsp.sign:RlNQc2lnbmF0dXJl\n");
    assert_eq!(m.canonical_c().unwrap(), expected_c.as_bytes());
}

#[test]
fn canonical_inputs_without_ref_and_with_paper_timestamp() {
    let xml = example_with("  <ref>POS-7-000123</ref>\n", "")
        .replace("2002-05-27T12:34:34Z", "27.05.2002 12:34:34");
    let m = parse_str(&xml).unwrap();
    let expected = EXPECTED_M.replace("ref:POS-7-000123\n", "ref:\n");
    assert_eq!(m.canonical_m(), expected.as_bytes());
}

#[test]
fn canonical_inputs_need_signatures() {
    let mut m = example_msg();
    m.fsp_sign = None;
    assert!(m.canonical_f().is_ok());
    let e = m.canonical_c().unwrap_err();
    assert_eq!(e.element.as_deref(), Some("FSPsign"));
    m.to_sign = None;
    let e = m.canonical_f().unwrap_err();
    assert_eq!(e.element.as_deref(), Some("to/sign"));
    assert!(m.canonical_c().is_err());
    // M does not depend on the signatures or accounts.
    m.account_payable = "other".into();
    assert_eq!(m.canonical_m(), EXPECTED_M.as_bytes());
}

#[test]
fn canonical_inputs_cover_every_field() {
    let base = example_msg();
    let c0 = base.canonical_c().unwrap();
    let mut variants = Vec::new();
    let mut m = base.clone();
    m.tier = Tier::Large;
    variants.push(m);
    let mut m = base.clone();
    m.reference = None;
    variants.push(m);
    let mut m = base.clone();
    m.from = PartyId::Tel("+4912345678".into());
    variants.push(m);
    let mut m = base.clone();
    m.to = PartyId::Tel("+4912345678".into());
    variants.push(m);
    let mut m = base.clone();
    m.timestamp += time::Duration::SECOND;
    variants.push(m);
    let mut m = base.clone();
    m.amount = Money::new(Currency::from_code("USD").unwrap(), 100_000).unwrap();
    variants.push(m);
    let mut m = base.clone();
    m.account_payable = "x".into();
    variants.push(m);
    let mut m = base.clone();
    m.account_receivable = "x".into();
    variants.push(m);
    let mut m = base.clone();
    m.to_sign = Some(b"other".to_vec());
    variants.push(m);
    let mut m = base.clone();
    m.fsp_sign = Some(b"other".to_vec());
    variants.push(m);
    for v in variants {
        assert_ne!(v.canonical_c().unwrap(), c0, "{v:?}");
    }
    // from_sign is not covered (it is the signature over C).
    let mut m = base;
    m.from_sign = Some(b"x".to_vec());
    assert_eq!(m.canonical_c().unwrap(), c0);
}

// ---------------------------------------------------------------- rejected

#[test]
fn dtd_with_external_entity_is_rejected_without_echo() {
    let xml = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE iMS [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n{}",
        example_with("1234-5678-9abc", "&xxe;")
    );
    let err = assert_malformed(&xml, None);
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("passwd"), "{shown}");
    assert!(!shown.contains("file:"), "{shown}");
    assert!(shown.contains("DOCTYPE"), "{shown}");
    // Also without the XML declaration.
    let xml = format!(
        "<!DOCTYPE iMS SYSTEM \"http://evil.example/x.dtd\">{}",
        example_xml()
    );
    let err = assert_malformed(&xml, None);
    assert!(!format!("{err:?}").contains("evil"));
}

#[test]
fn entity_references_are_restricted() {
    // Undeclared entity.
    assert_malformed(
        &example_with("1234-5678-9abc", "12&xxe;34"),
        Some("accountPayable"),
    );
    // Numeric character references, including ones that would yield CR/LF.
    for r in ["&#10;", "&#x41;", "&#13;", "&#48;"] {
        let err = assert_malformed(
            &example_with("POS-7-000123", &format!("POS{r}7")),
            Some("ref"),
        );
        assert!(err.message.contains("numeric"), "{err}");
    }
    // A predefined entity is accepted by the reader, but `&` is not a valid
    // account character: the error is about the value, not the entity.
    let err = assert_malformed(
        &example_with("1234-5678-9abc", "12&amp;34"),
        Some("accountPayable"),
    );
    assert!(err.message.contains("account"), "{err}");
    // Bare ampersand.
    assert_malformed(&example_with("1234-5678-9abc", "12&34"), None);
}

#[test]
fn unknown_elements_are_named() {
    for (from, to, name) in [
        ("<type>", "<color>red</color><type>", "color"),
        ("<timestamp>", "<via>x</via><timestamp>", "via"),
        ("<amount>", "<fee>EUR1.00</fee><amount>", "fee"),
        ("<sign></sign>", "<sign></sign><pin>1234</pin>", "from/pin"),
        ("</data>", "</data><extra/>", "extra"),
    ] {
        let err = assert_malformed(&example_with(from, to), Some(name));
        assert!(err.message.contains("unknown"), "{err}");
        assert!(!err.message.contains("1234"), "{err}");
    }
}

#[test]
fn repeated_elements_are_named() {
    for (from, to, name) in [
        (
            "<type>medium</type>",
            "<type>medium</type><type>large</type>",
            "type",
        ),
        (
            "<amount>EUR1000.00</amount>",
            "<amount>EUR1000.00</amount><amount>EUR1.00</amount>",
            "amount",
        ),
        ("<sign></sign>", "<sign></sign><sign></sign>", "from/sign"),
        (
            "<ref>POS-7-000123</ref>",
            "<ref>POS-7-000123</ref><ref>X</ref>",
            "ref",
        ),
    ] {
        let err = assert_malformed(&example_with(from, to), Some(name));
        assert!(err.message.contains("repeated"), "{err}");
    }
    // A whole repeated container.
    let data = "<data>\n    <accountPayable>1234-5678-9abc</accountPayable>\n    <accountReceivable>9876-543-21de</accountReceivable>\n    <amount>EUR1000.00</amount>\n  </data>";
    let xml = example_with(data, &format!("{data}{data}"));
    assert_malformed(&xml, Some("data"));
}

#[test]
fn missing_elements_are_named() {
    let cases: &[(&str, &str)] = &[
        ("<type>medium</type>", "type"),
        ("<timestamp>2002-05-27T12:34:34Z</timestamp>", "timestamp"),
        ("<FSPsign>RlNQc2lnbmF0dXJl</FSPsign>", "FSPsign"),
        (
            "<from><id>John.Bernard@person.xbank</id><sign></sign></from>",
            "from",
        ),
        ("<id>Merkur.Trade@merchant.xbank</id>", "to/id"),
        ("<sign>TWVya3VyU2ln</sign>", "to/sign"),
        (
            "<accountPayable>1234-5678-9abc</accountPayable>",
            "accountPayable",
        ),
        (
            "<accountReceivable>9876-543-21de</accountReceivable>",
            "accountReceivable",
        ),
        ("<amount>EUR1000.00</amount>", "amount"),
    ];
    for (remove, name) in cases {
        let err = assert_malformed(&example_with(remove, ""), Some(name));
        assert!(err.message.contains("missing"), "{err}");
    }
    let address_start = example_xml().find("  <address>").unwrap();
    let address_end = example_xml().find("  <data>").unwrap();
    let mut xml = example_xml();
    xml.replace_range(address_start..address_end, "");
    assert_malformed(&xml, Some("address"));
    assert_malformed("<iMS></iMS>", Some("type"));
    assert_malformed("", Some("iMS"));
    assert_malformed("<?xml version=\"1.0\"?>\n", Some("iMS"));
}

#[test]
fn out_of_order_elements_are_rejected() {
    let xml = example_with(
        "<type>medium</type>\n  <ref>POS-7-000123</ref>",
        "<ref>POS-7-000123</ref>\n  <type>medium</type>",
    );
    assert_malformed(&xml, Some("type"));
    let xml = example_with(
        "<accountPayable>1234-5678-9abc</accountPayable>\n    <accountReceivable>9876-543-21de</accountReceivable>",
        "<accountReceivable>9876-543-21de</accountReceivable>\n    <accountPayable>1234-5678-9abc</accountPayable>",
    );
    assert_malformed(&xml, Some("accountPayable"));
}

#[test]
fn attributes_and_namespaces_are_rejected() {
    for (from, to, name) in [
        ("<iMS>", "<iMS version=\"1\">", "iMS"),
        ("<iMS>", "<iMS xmlns=\"urn:x\">", "iMS"),
        ("<amount>", "<amount currency=\"EUR\">", "amount"),
        ("<sign></sign>", "<sign alg=\"x\"/>", "sign"),
        ("<type>", "<x:type xmlns:x=\"urn:x\">", "x:type"),
    ] {
        assert_malformed(&example_with(from, to), Some(name));
    }
    let xml = example_xml()
        .replace("<iMS>", "<p:iMS>")
        .replace("</iMS>", "</p:iMS>");
    let err = assert_malformed(&xml, Some("p:iMS"));
    assert!(err.message.contains("namespace"), "{err}");
}

#[test]
fn processing_instructions_comments_and_cdata_are_rejected() {
    assert_malformed(
        &format!("<?xml-stylesheet href=\"x\"?>{}", example_xml()),
        None,
    );
    assert_malformed(
        &example_with("<data>", "<?php echo 1; ?><data>"),
        Some("iMS"),
    );
    assert_malformed(&format!("{}<?pi?>", example_xml()), None);
    assert_malformed(&example_with("<data>", "<!-- note --><data>"), Some("iMS"));
    assert_malformed(&format!("<!-- c -->{}", example_xml()), None);
    assert_malformed(
        &example_with("EUR1000.00", "<![CDATA[EUR1000.00]]>"),
        Some("amount"),
    );
}

#[test]
fn line_breaks_inside_values_are_rejected() {
    for (from, to, el) in [
        ("POS-7-000123", "POS-7\n000123", "ref"),
        ("EUR1000.00", "EUR1\r000.00", "amount"),
        ("1234-5678-9abc", "1234\r\n5678", "accountPayable"),
        (TO_SIGN_B64, "TWVya3Vy\nU2ln", "to/sign"),
    ] {
        let err = assert_malformed(&example_with(from, to), Some(el));
        assert!(err.message.contains("CR or LF"), "{err}");
    }
}

#[test]
fn bad_types_and_refs_are_rejected() {
    for t in ["", "Medium", "huge", "me dium"] {
        assert_malformed(
            &example_with("<type>medium</type>", &format!("<type>{t}</type>")),
            Some("type"),
        );
    }
    let long = "R".repeat(65);
    for r in ["", "POS 7", "POS/7", "PÖS", long.as_str()] {
        assert_malformed(&example_with("POS-7-000123", r), Some("ref"));
    }
}

#[test]
fn bad_party_ids_are_rejected() {
    for (from, to, el) in [
        (
            "John.Bernard@person.xbank",
            "John.Bernard@merchant.xbank",
            "from/id",
        ),
        (
            "John.Bernard@person.xbank",
            "John.Bernard@fsp.xbank",
            "from/id",
        ),
        (
            "John.Bernard@person.xbank",
            "John.Bernard@bank.xbank",
            "from/id",
        ),
        ("John.Bernard@person.xbank", "John.Bernard", "from/id"),
        ("John.Bernard@person.xbank", "tel:+49123", "from/id"),
        (
            "John.Bernard@person.xbank",
            "John Bernard@person.xbank",
            "from/id",
        ),
        ("John.Bernard@person.xbank", "", "from/id"),
        (
            "Merkur.Trade@merchant.xbank",
            "Merkur.Trade@fsp.xbank",
            "to/id",
        ),
        (
            "Merkur.Trade@merchant.xbank",
            "Merkur.Trade@bank.xbank",
            "to/id",
        ),
        (
            "Merkur.Trade@merchant.xbank",
            "Merkur.Trade@merchant.XBANK",
            "to/id",
        ),
        ("Merkur.Trade@merchant.xbank", "tel:4912345678", "to/id"),
    ] {
        assert_malformed(&example_with(from, to), Some(el));
    }
}

#[test]
fn bad_amounts_are_rejected() {
    for a in [
        "EUR1000.0",
        "EUR1000.000",
        "EUR1000",
        "EUR01000.00",
        "EUR-1000.00",
        "EUR0.00",
        "EUR1e3",
        "EUR1.0e3",
        "EUR 1000.00",
        "JPY500.00",
        "KWD1.00",
        "EUR1000000000000000.00",
        "1000.00EUR",
    ] {
        let err = assert_malformed(&example_with("EUR1000.00", a), Some("amount"));
        assert!(!err.to_string().contains(a), "{err}");
    }
    for a in ["XXX1000.00", "ABC1.00", "XAU1"] {
        let err = parse_str(&example_with("EUR1000.00", a)).unwrap_err();
        assert_eq!(err.code, CODE_CURRENCY_UNSUPPORTED, "{err}");
        assert_eq!(err.element.as_deref(), Some("amount"));
    }
}

#[test]
fn bad_timestamps_accounts_and_signatures_are_rejected() {
    for t in [
        "2002-05-27T12:34:34.5Z",
        "2002-05-27 12:34:34",
        "27.05.2002",
        "yesterday",
    ] {
        assert_malformed(&example_with("2002-05-27T12:34:34Z", t), Some("timestamp"));
    }
    for a in ["", "12 34", "a\tb", &"1".repeat(65)] {
        assert_malformed(&example_with("1234-5678-9abc", a), Some("accountPayable"));
        assert_malformed(&example_with("9876-543-21de", a), Some("accountReceivable"));
    }
    let too_big = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        vec![7u8; MAX_SIGNATURE_BYTES + 1],
    );
    let max = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        vec![7u8; MAX_SIGNATURE_BYTES],
    );
    assert!(parse_str(&example_with(TO_SIGN_B64, &max)).is_ok());
    for s in [
        "TWVya3VyU2ln=",
        "TWVya3VyU2",
        "TWVya3VyU2l",
        "TWVy a3VyU2ln",
        "TWVya3VyU2ln!",
        "-_-_",
        too_big.as_str(),
    ] {
        assert_malformed(&example_with(TO_SIGN_B64, s), Some("to/sign"));
    }
    assert_malformed(
        &example_with(FSP_SIGN_B64, "RlNQc2lnbmF0dXJ"),
        Some("FSPsign"),
    );
}

#[test]
fn size_limit() {
    let base = example_xml();
    let pad = MAX_IMS_BYTES - base.len();
    let exact = format!("{base}{}", " ".repeat(pad));
    assert_eq!(exact.len(), MAX_IMS_BYTES);
    assert!(parse_str(&exact).is_ok());
    let over = format!("{exact} ");
    let err = parse_str(&over).unwrap_err();
    assert_eq!(err.code, CODE_TOO_LARGE);
    // Checked before anything else, even for non-XML garbage.
    let err = ImsMessage::parse(&vec![0xffu8; MAX_IMS_BYTES + 1]).unwrap_err();
    assert_eq!(err.code, CODE_TOO_LARGE);
}

#[test]
fn trailing_content_is_rejected() {
    for tail in ["x", "<iMS/>", "<!-- c -->", "&amp;", "</iMS>", "<a>"] {
        assert_malformed(&format!("{}{tail}", example_xml()), None);
    }
    assert!(parse_str(&format!("{}\n\n \t", example_xml())).is_ok());
}

#[test]
fn structure_errors() {
    // Text directly in a container.
    assert_malformed(&example_with("<address>", "<address>oops"), Some("address"));
    assert_malformed(&example_with("</data>", "x</data>"), Some("data"));
    assert_malformed(&example_with("<id>John", "hi<id>John"), Some("from"));
    // Child element inside a value element.
    assert_malformed(
        &example_with(
            "<amount>EUR1000.00</amount>",
            "<amount><b>EUR1000.00</b></amount>",
        ),
        Some("amount"),
    );
    // Wrong root.
    let xml = example_xml().replace("iMS>", "IMS>");
    assert_malformed(&xml, Some("IMS"));
    // Deep nesting stops early.
    let deep = format!("<iMS>{}", "<a>".repeat(1_000));
    assert_malformed(&deep, Some("a"));
    // Unclosed / mismatched tags.
    assert_malformed(&example_with("</data>", ""), None);
    assert_malformed(&example_with("</amount>", "<amount>"), None);
    assert_malformed(&example_with("</amount>", "</amnt>"), None);
    // Text before the root.
    assert_malformed(&format!("x{}", example_xml()), None);
}

#[test]
fn encoding_errors() {
    let mut bytes = example_xml().into_bytes();
    let i = bytes.iter().position(|&b| b == b'1').unwrap();
    bytes[i] = 0xC3; // truncated UTF-8 sequence
    let err = ImsMessage::parse(&bytes).unwrap_err();
    assert_eq!(err.code, CODE_MALFORMED);
    let err = parse_str(&format!("\u{feff}{}", example_xml())).unwrap_err();
    assert_eq!(err.code, CODE_MALFORMED);
    // UTF-16 input is not UTF-8.
    let utf16: Vec<u8> = example_xml()
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    assert_eq!(ImsMessage::parse(&utf16).unwrap_err().code, CODE_MALFORMED);
}

#[test]
fn errors_display_and_never_echo_input() {
    let err = parse_str(&example_with("EUR1000.00", "EUR1000.0")).unwrap_err();
    assert!(
        err.to_string().starts_with("ims.malformed at <amount>: "),
        "{err}"
    );
    let err = parse_str(&example_with("<data>", "<!-- c --><data>")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ims.malformed at <iMS>: comments are not allowed"
    );
    let err = ImsError::too_large(20_000, MAX_IMS_BYTES);
    assert!(err.to_string().starts_with("payload.too_large: "), "{err}");

    // Long or hostile element names are truncated and sanitised.
    let name = format!("Secret{}", "X".repeat(200));
    let err = assert_malformed(&example_with("<type>", &format!("<{name}/><type>")), None);
    let el = err.element.clone().unwrap();
    assert!(el.chars().count() <= 33, "{el}");
    assert!(!err.to_string().contains(&"X".repeat(40)));
    // Values never appear, however long.
    let secret = "TopSecretAccount".repeat(8);
    let err = parse_str(&example_with("1234-5678-9abc", &format!("{secret} x"))).unwrap_err();
    assert!(!format!("{err:?}").contains("TopSecret"), "{err:?}");
    let err = parse_str(&example_with("POS-7-000123", "ÄÖÜ<>")).unwrap_err();
    assert!(!format!("{err:?}").contains('Ä'), "{err:?}");
}

#[test]
fn fuzz_entry_accepts_valid_and_invalid_input() {
    fuzz::fuzz_parse(example_xml().as_bytes());
    fuzz::fuzz_parse(b"<iMS>");
    fuzz::fuzz_parse(&[0xff, 0xfe, 0x00]);
}
