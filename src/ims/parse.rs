//! Strict iMS parser on top of quick-xml's pull reader.
//!
//! Two phases: `build_tree` turns the token stream into a small element
//! tree (rejecting every XML feature the iMS does not need), then
//! `validate` checks the tree against the fixed iMS layout and parses the
//! values.
//!
//! Rejected outright (all `ims.malformed`):
//! * a DOCTYPE / DTD (so no entity can ever be declared or expanded);
//! * processing instructions, and an XML declaration anywhere but at byte 0
//!   (the declaration may only carry `version="1.0"`, optionally
//!   `encoding="UTF-8"` (case-insensitive) and `standalone="yes|no"`);
//! * a byte-order mark;
//! * comments and CDATA sections;
//! * entity references other than `&lt; &gt; &amp; &quot; &apos;`, and
//!   **all** numeric character references (`&#10;`, `&#x41;`) — nothing in an
//!   iMS needs them and they could smuggle CR/LF past the line-break rule;
//! * attributes on any element, namespace prefixes (and therefore
//!   `xmlns` declarations, which are attributes);
//! * unknown, repeated, missing or out-of-order elements (the order is the
//!   contract's: `type`, optional `ref`, `address` (`from`, `to`, `FSPsign`,
//!   `timestamp`), `data` (`accountPayable`, `accountReceivable`, `amount`);
//!   `from`/`to` hold `id` then `sign`);
//! * non-whitespace text in container elements, child elements in value
//!   elements, anything but whitespace before or after the root element.
//!
//! Value elements are trimmed of XML whitespace; a value that still contains
//! CR or LF is rejected. A self-closing value element (`<sign/>`) is the same
//! as an empty one.

use quick_xml::errors::{Error as XmlError, IllFormedError};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::error::ImsError;
use super::fields::{validate_account, Ref, Tier};
use super::money::Money;
use super::party::PartyId;
use super::timestamp::parse_timestamp;
use super::{ImsMessage, MAX_IMS_BYTES};

/// Maximum decoded size of a signature (`sign`, `FSPsign`).
pub const MAX_SIGNATURE_BYTES: usize = 1024;
/// Maximum base64 length of a signature with padding.
const MAX_SIGNATURE_B64: usize = MAX_SIGNATURE_BYTES.div_ceil(3) * 4;
/// The iMS tree is 4 levels deep (`iMS/address/from/id`); anything deeper is
/// rejected while reading.
const MAX_DEPTH: usize = 4;

#[derive(Debug)]
struct Node {
    name: String,
    children: Vec<Node>,
    text: String,
}

fn is_xml_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn all_ws(s: &str) -> bool {
    s.chars().all(is_xml_ws)
}

/// Parses and validates an iMS message.
pub(crate) fn parse(xml: &[u8]) -> Result<ImsMessage, ImsError> {
    if xml.len() > MAX_IMS_BYTES {
        return Err(ImsError::too_large(xml.len(), MAX_IMS_BYTES));
    }
    let s = std::str::from_utf8(xml).map_err(|e| {
        ImsError::malformed(format!(
            "message is not valid UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })?;
    if s.starts_with('\u{feff}') {
        return Err(ImsError::malformed("a byte order mark is not allowed"));
    }
    let root = build_tree(s)?;
    validate(&root)
}

/// Maps a quick-xml error to a fixed message (never quick-xml's own text,
/// which may quote input).
fn xml_error(e: &XmlError, pos: u64) -> ImsError {
    let what = match e {
        XmlError::Syntax(_) => "XML syntax error",
        XmlError::IllFormed(IllFormedError::MissingDeclVersion(_))
        | XmlError::IllFormed(IllFormedError::UnknownVersion) => "invalid XML declaration",
        XmlError::IllFormed(IllFormedError::MissingDoctypeName) => "DOCTYPE/DTD is not allowed",
        XmlError::IllFormed(IllFormedError::MissingEndTag(_))
        | XmlError::IllFormed(IllFormedError::UnmatchedEndTag(_))
        | XmlError::IllFormed(IllFormedError::MismatchedEndTag { .. }) => {
            "mismatched or missing end tag"
        }
        XmlError::IllFormed(IllFormedError::UnclosedReference) => "unescaped '&' in text",
        XmlError::IllFormed(_) => "XML is not well-formed",
        XmlError::Escape(_) => "invalid character or entity reference",
        XmlError::Encoding(_) => "invalid character encoding",
        _ => "invalid XML",
    };
    ImsError::malformed(format!("{what} (byte {pos})"))
}

/// Name of a start/empty tag; rejects prefixes and attributes.
fn start_name(e: &BytesStart<'_>) -> Result<String, ImsError> {
    let qname = e.name();
    let name: &str = qname.as_ref();
    let name = name.to_owned();
    if name.contains(':') {
        return Err(ImsError::malformed_at(
            &name,
            "namespace prefixes are not allowed",
        ));
    }
    if !all_ws(e.attributes_raw()) {
        return Err(ImsError::malformed_at(&name, "attributes are not allowed"));
    }
    Ok(name)
}

/// Checks the content of an XML declaration (`xml version="1.0" ...`).
fn check_decl(content: &str) -> Result<(), ImsError> {
    let err = || {
        ImsError::malformed(
            "XML declaration may only be version=\"1.0\" with optional encoding=\"UTF-8\" and standalone",
        )
    };
    let mut rest = content.strip_prefix("xml").ok_or_else(err)?;
    let mut seen: Vec<&str> = Vec::new();
    loop {
        let trimmed = rest.trim_start_matches(is_xml_ws);
        if trimmed.is_empty() {
            break;
        }
        if trimmed.len() == rest.len() {
            return Err(err());
        }
        let (name, after) = trimmed.split_once('=').ok_or_else(err)?;
        let name = name.trim_end_matches(is_xml_ws);
        let after = after.trim_start_matches(is_xml_ws);
        let quote = after.chars().next().ok_or_else(err)?;
        if quote != '"' && quote != '\'' {
            return Err(err());
        }
        let body = after.get(1..).ok_or_else(err)?;
        let (value, tail) = body.split_once(quote).ok_or_else(err)?;
        let ok = match name {
            "version" => seen.is_empty() && value == "1.0",
            "encoding" => seen == ["version"] && value.eq_ignore_ascii_case("UTF-8"),
            "standalone" => {
                matches!(seen.last(), Some(&"version") | Some(&"encoding"))
                    && matches!(value, "yes" | "no")
            }
            _ => false,
        };
        if !ok {
            return Err(err());
        }
        seen.push(name);
        rest = tail;
    }
    if seen.first() == Some(&"version") {
        Ok(())
    } else {
        Err(err())
    }
}

fn build_tree(s: &str) -> Result<Node, ImsError> {
    let mut reader = Reader::from_str(s);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        cfg.allow_dangling_amp = false;
        cfg.allow_unmatched_ends = false;
    }
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut first = true;

    let trailing = || ImsError::malformed("content after </iMS> is not allowed");

    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| xml_error(&e, reader.error_position()))?;
        let is_first = std::mem::replace(&mut first, false);
        let here = |stack: &Vec<Node>| stack.last().map(|n| n.name.clone());
        let at_here = |stack: &Vec<Node>, err: ImsError| match here(stack) {
            Some(n) => err.at(&n),
            None => err,
        };
        match event {
            Event::Decl(d) => {
                if !is_first || pos != 0 {
                    return Err(ImsError::malformed(
                        "an XML declaration is only allowed at the very start",
                    ));
                }
                check_decl(&d)?;
            }
            Event::Start(_) | Event::Empty(_) if root.is_some() => return Err(trailing()),
            Event::Start(e) => {
                let name = start_name(&e)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(ImsError::malformed_at(&name, "unexpected element"));
                }
                stack.push(Node {
                    name,
                    children: Vec::new(),
                    text: String::new(),
                });
            }
            Event::Empty(e) => {
                let name = start_name(&e)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(ImsError::malformed_at(&name, "unexpected element"));
                }
                let node = Node {
                    name,
                    children: Vec::new(),
                    text: String::new(),
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or_else(|| ImsError::malformed("unmatched end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::Text(t) => match stack.last_mut() {
                Some(node) => node.text.push_str(&t),
                None => {
                    if !all_ws(&t) {
                        return Err(if root.is_some() {
                            trailing()
                        } else {
                            ImsError::malformed("text outside the <iMS> element")
                        });
                    }
                }
            },
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    return Err(at_here(
                        &stack,
                        ImsError::malformed("numeric character references are not allowed"),
                    ));
                } else {
                    match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        _ => {
                            return Err(at_here(
                                &stack,
                                ImsError::malformed(
                                    "only the predefined entity references are allowed",
                                ),
                            ))
                        }
                    }
                };
                match stack.last_mut() {
                    Some(node) => node.text.push(c),
                    None => {
                        return Err(if root.is_some() {
                            trailing()
                        } else {
                            ImsError::malformed("text outside the <iMS> element")
                        })
                    }
                }
            }
            Event::CData(_) => {
                return Err(at_here(
                    &stack,
                    ImsError::malformed("CDATA sections are not allowed"),
                ))
            }
            Event::Comment(_) => {
                return Err(at_here(
                    &stack,
                    ImsError::malformed("comments are not allowed"),
                ))
            }
            Event::PI(_) => {
                return Err(at_here(
                    &stack,
                    ImsError::malformed("processing instructions are not allowed"),
                ))
            }
            Event::DocType(_) => return Err(ImsError::malformed("DOCTYPE/DTD is not allowed")),
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(ImsError::malformed_at(&open.name, "element is not closed"));
    }
    root.ok_or_else(|| ImsError::malformed_at("iMS", "missing element"))
}

/// Name used in errors: `from/id`, `to/sign`, otherwise the element's name.
fn label(parent: &Node, child: &str) -> String {
    if parent.name == "from" || parent.name == "to" {
        format!("{}/{}", parent.name, child)
    } else {
        child.to_owned()
    }
}

/// Matches the children of a container against `spec` (name, required) in
/// document order.
fn children<'a, const N: usize>(
    node: &'a Node,
    spec: [(&'static str, bool); N],
) -> Result<[Option<&'a Node>; N], ImsError> {
    if !all_ws(&node.text) {
        return Err(ImsError::malformed_at(
            &node.name,
            "text is not allowed directly inside this element",
        ));
    }
    let mut out: [Option<&Node>; N] = [None; N];
    let mut next = 0usize;
    for child in &node.children {
        let Some(idx) = spec.iter().position(|(n, _)| *n == child.name) else {
            return Err(ImsError::malformed_at(
                &label(node, &child.name),
                format!("unknown element in <{}>", node.name),
            ));
        };
        let slot = out
            .get_mut(idx)
            .ok_or_else(|| ImsError::malformed("internal layout error"))?;
        if slot.is_some() {
            return Err(ImsError::malformed_at(
                &label(node, &child.name),
                "repeated element",
            ));
        }
        if idx < next {
            return Err(ImsError::malformed_at(
                &label(node, &child.name),
                "element out of order",
            ));
        }
        if let Some((missing, _)) = spec.get(next..idx).unwrap_or(&[]).iter().find(|(_, r)| *r) {
            return Err(ImsError::malformed_at(
                &label(node, missing),
                "missing element",
            ));
        }
        *slot = Some(child);
        next = idx + 1;
    }
    if let Some((missing, _)) = spec.get(next..).unwrap_or(&[]).iter().find(|(_, r)| *r) {
        return Err(ImsError::malformed_at(
            &label(node, missing),
            "missing element",
        ));
    }
    Ok(out)
}

fn required<'a>(n: Option<&'a Node>, label: &str) -> Result<&'a Node, ImsError> {
    n.ok_or_else(|| ImsError::malformed_at(label, "missing element"))
}

/// The trimmed text of a value element.
fn leaf<'a>(node: &'a Node, label: &str) -> Result<&'a str, ImsError> {
    if !node.children.is_empty() {
        return Err(ImsError::malformed_at(
            label,
            "element must not contain child elements",
        ));
    }
    let v = node.text.trim_matches(is_xml_ws);
    if v.contains(['\r', '\n']) {
        return Err(ImsError::malformed_at(
            label,
            "value must not contain CR or LF",
        ));
    }
    Ok(v)
}

/// An empty signature is `None`; otherwise standard base64 with padding.
fn signature(v: &str, label: &str) -> Result<Option<Vec<u8>>, ImsError> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > MAX_SIGNATURE_B64 {
        return Err(ImsError::malformed_at(
            label,
            format!("signature longer than {MAX_SIGNATURE_BYTES} bytes"),
        ));
    }
    let bytes = STANDARD.decode(v).map_err(|_| {
        ImsError::malformed_at(label, "signature must be standard base64 with padding")
    })?;
    if bytes.is_empty() || bytes.len() > MAX_SIGNATURE_BYTES {
        return Err(ImsError::malformed_at(
            label,
            format!("signature must be 1-{MAX_SIGNATURE_BYTES} bytes"),
        ));
    }
    Ok(Some(bytes))
}

fn party(node: &Node) -> Result<(PartyId, Option<Vec<u8>>), ImsError> {
    let [id, sign] = children(node, [("id", true), ("sign", true)])?;
    let id_label = label(node, "id");
    let sign_label = label(node, "sign");
    let id =
        PartyId::parse(leaf(required(id, &id_label)?, &id_label)?).map_err(|e| e.at(&id_label))?;
    let sign = signature(
        leaf(required(sign, &sign_label)?, &sign_label)?,
        &sign_label,
    )?;
    Ok((id, sign))
}

fn validate(root: &Node) -> Result<ImsMessage, ImsError> {
    if root.name != "iMS" {
        return Err(ImsError::malformed_at(
            &root.name,
            "root element must be <iMS>",
        ));
    }
    let [ty, rf, address, data] = children(
        root,
        [
            ("type", true),
            ("ref", false),
            ("address", true),
            ("data", true),
        ],
    )?;
    let tier: Tier = leaf(required(ty, "type")?, "type")?
        .parse()
        .map_err(|e: ImsError| e.at("type"))?;
    let reference = match rf {
        Some(n) => Some(Ref::new(leaf(n, "ref")?).map_err(|e| e.at("ref"))?),
        None => None,
    };

    let address = required(address, "address")?;
    let [from, to, fsp_sign, timestamp] = children(
        address,
        [
            ("from", true),
            ("to", true),
            ("FSPsign", true),
            ("timestamp", true),
        ],
    )?;
    let (from, from_sign) = party(required(from, "from")?)?;
    if !from.is_payer_capable() {
        return Err(ImsError::malformed_at(
            "from/id",
            "payer must be a person or a tel: id",
        ));
    }
    let (to, to_sign) = party(required(to, "to")?)?;
    if !to.is_payee_capable() {
        return Err(ImsError::malformed_at(
            "to/id",
            "payee must be a merchant, a person or a tel: id",
        ));
    }
    let fsp_sign = signature(leaf(required(fsp_sign, "FSPsign")?, "FSPsign")?, "FSPsign")?;
    let timestamp = parse_timestamp(leaf(required(timestamp, "timestamp")?, "timestamp")?)
        .map_err(|e| e.at("timestamp"))?;

    let data = required(data, "data")?;
    let [ap, ar, amount] = children(
        data,
        [
            ("accountPayable", true),
            ("accountReceivable", true),
            ("amount", true),
        ],
    )?;
    let account_payable = leaf(required(ap, "accountPayable")?, "accountPayable")?;
    validate_account(account_payable).map_err(|e| e.at("accountPayable"))?;
    let account_receivable = leaf(required(ar, "accountReceivable")?, "accountReceivable")?;
    validate_account(account_receivable).map_err(|e| e.at("accountReceivable"))?;
    let amount =
        Money::parse(leaf(required(amount, "amount")?, "amount")?).map_err(|e| e.at("amount"))?;

    Ok(ImsMessage {
        tier,
        reference,
        from,
        from_sign,
        to,
        to_sign,
        fsp_sign,
        timestamp,
        account_payable: account_payable.to_owned(),
        account_receivable: account_receivable.to_owned(),
        amount,
    })
}
