#!/usr/bin/env python3
"""Offline self-checks for tmcs_client (no server needed).

    python3 test_offline.py        (plain unittest)

Expected byte strings are written out literally from CONTRACT.md v1.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import unittest

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

import tmcs_client as tc

# ---------------------------------------------------------------------------
# the contract's example message (§5), verbatim
CONTRACT_EXAMPLE_XML = b"""<iMS>
  <type>medium</type>
  <ref>POS-7-000123</ref>
  <address>
    <from><id>John.Bernard@person.xbank</id><sign></sign></from>
    <to><id>Merkur.Trade@merchant.xbank</id><sign>BASE64</sign></to>
    <FSPsign>BASE64</FSPsign>
    <timestamp>2002-05-27T12:34:34Z</timestamp>
  </address>
  <data>
    <accountPayable>1234-5678-9abc</accountPayable>
    <accountReceivable>9876-543-21de</accountReceivable>
    <amount>EUR1000.00</amount>
  </data>
</iMS>
"""

EXPECTED_M = (
    b"ims-c1\n"
    b"type:medium\n"
    b"ref:POS-7-000123\n"
    b"from.id:John.Bernard@person.xbank\n"
    b"to.id:Merkur.Trade@merchant.xbank\n"
    b"timestamp:2002-05-27T12:34:34Z\n"
    b"amount:EUR1000.00\n"
)
EXPECTED_F = EXPECTED_M + (
    b"accountPayable:1234-5678-9abc\n"
    b"accountReceivable:9876-543-21de\n"
    b"to.sign:BASE64\n"
)
EXPECTED_C = EXPECTED_F + b"fsp.sign:BASE64\n"


def reference_decrypt_pin_block(transport_priv: ec.EllipticCurvePrivateKey, block_b64: str) -> bytes:
    """Independent reference of the server side of §7 (what the HSM does)."""
    raw = base64.b64decode(block_b64, validate=True)
    E, N, CT = raw[:65], raw[65:77], raw[77:]
    assert E[0] == 0x04, "E must be uncompressed SEC1"
    eph_pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), E)
    Z = transport_priv.exchange(ec.ECDH(), eph_pub)
    T = transport_priv.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    K = HKDF(algorithm=hashes.SHA256(), length=32, salt=E + T, info=b"tmcs-pinblock-v1").derive(Z)
    return AESGCM(K).decrypt(N, CT, b"tmcs-pinblock-v1")


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(subject_cn, key, issuer_cn=None, issuer_key=None, ca=False, ku=None,
              not_after_days=30, not_before_days=-1):
    issuer_cn = issuer_cn or subject_cn
    issuer_key = issuer_key or key
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(_name(subject_cn)).issuer_name(_name(issuer_cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now + dt.timedelta(days=not_before_days))
         .not_valid_after(now + dt.timedelta(days=not_after_days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ku:
        flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                     crl_sign=False, encipher_only=False, decipher_only=False)
        flags.update(ku)
        b = b.add_extension(x509.KeyUsage(**flags), critical=True)
    return b.sign(issuer_key, hashes.SHA256())


def p256():
    return ec.generate_private_key(ec.SECP256R1())


# ---------------------------------------------------------------------------


class PinBlockTest(unittest.TestCase):
    def setUp(self):
        self.tkey = p256()
        self.tcert = make_cert("tmcs transport", self.tkey, "tmcs issuing CA", p256(),
                               ku={"key_agreement": True})
        self.tpem = self.tcert.public_bytes(serialization.Encoding.PEM)

    def test_activation_plaintext(self):
        self.assertEqual(tc.activation_plaintext("+4915112345678", "AB12-CD34", "483920"),
                         b"v1|activate|+4915112345678|AB12-CD34|483920")

    def test_auth_plaintext(self):
        self.assertEqual(
            tc.auth_plaintext("r-42", "n0nce", "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80", "483920"),
            b"v1|auth|r-42|n0nce|q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80|483920")

    def test_plaintext_rejects_separator(self):
        with self.assertRaises(ValueError):
            tc.activation_plaintext("+49151", "a|b", "1234")

    def test_round_trip_from_pem(self):
        pt = tc.activation_plaintext("+4915112345678", "ACT-0001", "483920")
        block = tc.encrypt_pin_block(self.tpem, pt)
        self.assertEqual(reference_decrypt_pin_block(self.tkey, block), pt)

    def test_round_trip_auth_from_cert_object(self):
        pt = tc.auth_plaintext("req-1", "nonce-1", "abc_-", "483920")
        block = tc.encrypt_pin_block(self.tcert, pt)
        self.assertEqual(reference_decrypt_pin_block(self.tkey, block), pt)

    def test_layout(self):
        pt = b"v1|auth|x|y|z|123456"
        raw = base64.b64decode(tc.encrypt_pin_block(self.tcert, pt), validate=True)
        self.assertEqual(len(raw), 65 + 12 + len(pt) + 16)
        self.assertEqual(raw[0], 0x04)
        # E is a valid P-256 point
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw[:65])

    def test_standard_base64_with_padding(self):
        block = tc.encrypt_pin_block(self.tcert, b"v1|auth|a|b|c|1")   # 65+12+15+16 = 108 bytes
        self.assertRegex(block, r"^[A-Za-z0-9+/]+={0,2}$")
        self.assertEqual(len(block) % 4, 0)

    def test_fresh_each_time(self):
        pt = b"v1|auth|a|b|c|483920"
        a = base64.b64decode(tc.encrypt_pin_block(self.tcert, pt))
        b = base64.b64decode(tc.encrypt_pin_block(self.tcert, pt))
        self.assertNotEqual(a[:65], b[:65], "ephemeral key must be fresh")
        self.assertNotEqual(a[65:77], b[65:77], "nonce must be fresh")

    def test_deterministic_vector_matches_manual_derivation(self):
        eph = p256()
        nonce = bytes(range(12))
        pt = b"v1|activate|+4915112345678|CODE|483920"
        block = tc.encrypt_pin_block(self.tcert, pt, _ephemeral=eph, _nonce=nonce)
        E = eph.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)
        T = self.tkey.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)
        Z = self.tkey.exchange(ec.ECDH(), eph.public_key())   # same Z from the other side
        K = HKDF(algorithm=hashes.SHA256(), length=32, salt=E + T, info=b"tmcs-pinblock-v1").derive(Z)
        expected = E + nonce + AESGCM(K).encrypt(nonce, pt, b"tmcs-pinblock-v1")
        self.assertEqual(base64.b64decode(block), expected)

    def test_tamper_and_wrong_key_fail(self):
        pt = b"v1|auth|a|b|c|483920"
        raw = bytearray(base64.b64decode(tc.encrypt_pin_block(self.tcert, pt)))
        raw[-1] ^= 1
        with self.assertRaises(InvalidTag):
            reference_decrypt_pin_block(self.tkey, base64.b64encode(bytes(raw)).decode())
        good = tc.encrypt_pin_block(self.tcert, pt)
        with self.assertRaises(InvalidTag):
            reference_decrypt_pin_block(p256(), good)

    def test_rejects_non_p256_transport(self):
        k = ec.generate_private_key(ec.SECP384R1())
        with self.assertRaises(ValueError):
            tc.encrypt_pin_block(k.public_key(), b"x")


class CanonicalTest(unittest.TestCase):
    def test_contract_example_from_xml(self):
        m = tc.IMS.from_xml(CONTRACT_EXAMPLE_XML)
        self.assertEqual(m.from_sign, "")
        self.assertEqual(m.to_sign, "BASE64")
        self.assertEqual(m.fsp_sign, "BASE64")
        self.assertEqual(m.canonical_m(), EXPECTED_M)
        self.assertEqual(m.canonical_f(), EXPECTED_F)
        self.assertEqual(m.canonical_c(), EXPECTED_C)

    def test_contract_example_dtbs(self):
        m = tc.IMS.from_xml(CONTRACT_EXAMPLE_XML)
        expected = base64.urlsafe_b64encode(hashlib.sha256(EXPECTED_C).digest()).decode().rstrip("=")
        self.assertEqual(m.dtbs_sha256(), expected)
        self.assertEqual(len(expected), 43)
        self.assertNotIn("=", expected)

    def test_contract_example_from_fields_and_paper_timestamp(self):
        m = tc.IMS(type="medium", ref="POS-7-000123", from_id="John.Bernard@person.xbank",
                   to_id="Merkur.Trade@merchant.xbank", timestamp="27.05.2002 12:34:34",
                   amount="EUR1000.00", account_payable="1234-5678-9abc",
                   account_receivable="9876-543-21de", to_sign="BASE64", fsp_sign="BASE64")
        self.assertEqual(m.canonical_c(), EXPECTED_C)
        m2 = tc.IMS(**{**m.__dict__, "timestamp": "2002-05-27T14:34:34+02:00"})
        self.assertEqual(m2.canonical_c(), EXPECTED_C)

    def test_no_ref_gives_empty_ref_line(self):
        m = tc.IMS(type="small", from_id="tel:+4915112345678", to_id="Merkur.Trade@merchant.xbank",
                   timestamp="2024-01-02T03:04:05Z", amount="EUR25.00",
                   account_payable="A", account_receivable="B")
        self.assertEqual(m.canonical_m(),
                         b"ims-c1\ntype:small\nref:\nfrom.id:tel:+4915112345678\n"
                         b"to.id:Merkur.Trade@merchant.xbank\ntimestamp:2024-01-02T03:04:05Z\n"
                         b"amount:EUR25.00\n")
        self.assertNotIn(b"<ref>", m.to_xml())

    def test_whitespace_trimmed_on_parse(self):
        xml = CONTRACT_EXAMPLE_XML.replace(b"<type>medium</type>", b"<type>\n   medium  </type>")
        self.assertEqual(tc.IMS.from_xml(xml).canonical_m(), EXPECTED_M)

    def test_strict_parse_rejections(self):
        bad = [
            CONTRACT_EXAMPLE_XML.replace(b"<ref>POS-7-000123</ref>", b"<ref>a</ref><ref>b</ref>"),
            CONTRACT_EXAMPLE_XML.replace(b"<ref>POS-7-000123</ref>", b"<extra>x</extra>"),
            CONTRACT_EXAMPLE_XML.replace(b"<amount>EUR1000.00</amount>", b"<amount>EUR1000\n.00</amount>"),
            b'<!DOCTYPE iMS [<!ENTITY x "y">]>' + CONTRACT_EXAMPLE_XML,
            b"<?pi x?>" + CONTRACT_EXAMPLE_XML,
        ]
        for b in bad:
            with self.assertRaises(tc.ImsError, msg=b[:60]):
                tc.IMS.from_xml(b)

    def test_sign_and_xml_round_trip(self):
        mk, fk = p256(), p256()
        m = tc.IMS(type="small", ref="R-1", from_id="tel:+4915112345678",
                   to_id="Merkur.Trade@merchant.xbank", timestamp=tc.utc_now_timestamp(),
                   amount="EUR25.00", account_payable="1234-5678-9abc",
                   account_receivable="9876-543-21de").normalised()
        m.sign_merchant(mk)
        m.sign_fsp(fk)
        # signatures: DER ECDSA, standard base64 with padding
        for s in (m.to_sign, m.fsp_sign):
            self.assertRegex(s, r"^[A-Za-z0-9+/]+={0,2}$")
            self.assertEqual(len(s) % 4, 0)
            self.assertEqual(base64.b64decode(s)[0], 0x30)   # DER SEQUENCE
        mk.public_key().verify(base64.b64decode(m.to_sign), m.canonical_m(), ec.ECDSA(hashes.SHA256()))
        fk.public_key().verify(base64.b64decode(m.fsp_sign), m.canonical_f(), ec.ECDSA(hashes.SHA256()))
        self.assertTrue(m.canonical_f().startswith(m.canonical_m()))
        self.assertTrue(m.canonical_f().endswith(f"to.sign:{m.to_sign}\n".encode()))
        self.assertTrue(m.canonical_c().endswith(f"fsp.sign:{m.fsp_sign}\n".encode()))
        xml = m.to_xml()
        self.assertIn(b"<from><id>tel:+4915112345678</id><sign></sign></from>", xml)
        back = tc.IMS.from_xml(xml)
        self.assertEqual(back, m)
        self.assertEqual(back.canonical_c(), m.canonical_c())

    def test_rsa_signature_supported(self):
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sig = tc.sign_sha256(k, b"data")
        self.assertTrue(tc.verify_sha256(k.public_key(), sig, b"data"))
        self.assertFalse(tc.verify_sha256(k.public_key(), sig, b"datA"))


class ValuesTest(unittest.TestCase):
    def test_amounts(self):
        self.assertEqual(tc.parse_amount("EUR25.00"), ("EUR", 2500))
        self.assertEqual(tc.parse_amount("JPY1000"), ("JPY", 1000))
        self.assertEqual(tc.parse_amount("KWD1.250"), ("KWD", 1250))
        for bad in ("EUR25", "EUR25.0", "EUR25.000", "JPY10.00", "EUR0.00", "eur1.00", "EUR-1.00", "EUR 1.00"):
            with self.assertRaises(tc.ImsError, msg=bad):
                tc.parse_amount(bad)
        self.assertEqual(tc.normalise_amount("EUR025.00"), "EUR25.00")

    def test_tiers(self):
        self.assertEqual(tc.tier_for("EUR25.00"), "small")
        self.assertEqual(tc.tier_for("EUR50.00"), "small")
        self.assertEqual(tc.tier_for("EUR50.01"), "medium")
        self.assertEqual(tc.tier_for("USD1000.00"), "medium")
        self.assertEqual(tc.tier_for("EUR1000.01"), "large")

    def test_party_ids(self):
        for ok in ("tel:+4915112345678", "John.Bernard@person.xbank", "Merkur.Trade@merchant.xbank",
                   "Demo.FSP@fsp.xbank", "a@bank.x-1"):
            tc.validate_party_id(ok)
        for bad in ("tel:+1234567", "tel:+1234567890123456", "tel:4915112345678",
                    "x@shop.xbank", "x@merchant.XBANK", "x@merchant", "@merchant.xbank",
                    "a b@person.xbank", "x@merchant.x.bank"):
            with self.assertRaises(tc.ImsError, msg=bad):
                tc.validate_party_id(bad)

    def test_refs(self):
        tc.validate_ref("POS-7-000123")
        for bad in ("", "a" * 65, "a b", "a/b"):
            with self.assertRaises(tc.ImsError):
                tc.validate_ref(bad)

    def test_timestamps(self):
        self.assertEqual(tc.normalise_timestamp("2002-05-27T12:34:34Z"), "2002-05-27T12:34:34Z")
        self.assertEqual(tc.normalise_timestamp("2002-05-27t12:34:34.999z"), "2002-05-27T12:34:34Z")
        self.assertEqual(tc.normalise_timestamp("2002-05-27T00:30:00-01:00"), "2002-05-27T01:30:00Z")
        self.assertEqual(tc.normalise_timestamp("27.05.2002 12:34:34"), "2002-05-27T12:34:34Z")
        for bad in ("2002-05-27 12:34:34", "2002-13-27T12:34:34Z", "32.05.2002 12:34:34", "now"):
            with self.assertRaises(tc.ImsError, msg=bad):
                tc.normalise_timestamp(bad)
        self.assertRegex(tc.utc_now_timestamp(), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class DeviceHeaderTest(unittest.TestCase):
    HDR_RE = re.compile(r'^TMCS-Device msisdn="(\+[0-9]+)",ts="([0-9]+)",sig="([A-Za-z0-9+/]+={0,2})"$')

    def test_signing_input_literal(self):
        self.assertEqual(
            tc.device_signing_input("post", "/v1/handset/requests/r-1/authorize", "+4915112345678", 1700000000),
            b"tmcs-dev-v1\nPOST\n/v1/handset/requests/r-1/authorize\n+4915112345678\n1700000000\n")

    def test_query_is_not_signed(self):
        self.assertEqual(
            tc.device_signing_input("GET", "/v1/handset/requests?status=pending", "+4915112345678", 1),
            b"tmcs-dev-v1\nGET\n/v1/handset/requests\n+4915112345678\n1\n")

    def test_header_format_and_signature(self):
        dev = tc.DeviceKey()
        hdr = dev.authorization("GET", "/v1/handset/requests/abc", "+4915112345678", ts=1700000000)
        m = self.HDR_RE.match(hdr)
        self.assertIsNotNone(m, hdr)
        self.assertEqual(m.group(1), "+4915112345678")
        self.assertEqual(m.group(2), "1700000000")
        sig = base64.b64decode(m.group(3), validate=True)
        dev.public_key.verify(sig, b"tmcs-dev-v1\nGET\n/v1/handset/requests/abc\n+4915112345678\n1700000000\n",
                              ec.ECDSA(hashes.SHA256()))
        with self.assertRaises(InvalidSignature):
            dev.public_key.verify(sig, b"tmcs-dev-v1\nGET\n/v1/handset/requests/abd\n+4915112345678\n1700000000\n",
                                  ec.ECDSA(hashes.SHA256()))

    def test_default_ts_is_now(self):
        dev = tc.DeviceKey()
        import time
        hdr = dev.authorization("GET", "/v1/handset/requests", "+4915112345678")
        ts = int(self.HDR_RE.match(hdr).group(2))
        self.assertLessEqual(abs(ts - int(time.time())), 2)

    def test_spki_b64(self):
        dev = tc.DeviceKey()
        der = base64.b64decode(dev.spki_der_b64(), validate=True)
        pub = serialization.load_der_public_key(der)
        self.assertIsInstance(pub.curve, ec.SECP256R1)
        self.assertEqual(pub.public_numbers(), dev.public_key.public_numbers())


class DisplayTest(unittest.TestCase):
    REQ = {
        "request_id": "7f3c",
        "nonce": "n-1",
        "dtbs_sha256": "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80",
        "expires_at": "2024-01-02T03:06:05Z",
        "verification_code": "4711",
        "display": {"payee": "Merkur.Trade@merchant.xbank", "amount": "25.00", "currency": "EUR",
                    "text": "Pay EUR 25.00 to Merkur"},
    }
    EXPECTED = (b"tmcs-display-v1\n"
                b"request_id:7f3c\n"
                b"payee:Merkur.Trade@merchant.xbank\n"
                b"amount:EUR25.00\n"
                b"verification_code:4711\n"
                b"dtbs_sha256:q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80\n"
                b"expires_at:2024-01-02T03:06:05Z\n")

    def test_display_string_literal(self):
        self.assertEqual(tc.display_string("7f3c", "Merkur.Trade@merchant.xbank", "EUR25.00", "4711",
                                           "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80",
                                           "2024-01-02T03:06:05Z"), self.EXPECTED)

    def test_from_response_amount_forms(self):
        self.assertEqual(tc.display_string_from_response(self.REQ), self.EXPECTED)
        req = dict(self.REQ, display=dict(self.REQ["display"], amount="EUR25.00"))
        self.assertEqual(tc.display_string_from_response(req), self.EXPECTED)

    def test_verify_display_sig(self):
        k = p256()
        cert = make_cert("tmcs display", k, "tmcs issuing CA", p256(), ku={"digital_signature": True})
        req = dict(self.REQ, display_sig=base64.b64encode(k.sign(self.EXPECTED, ec.ECDSA(hashes.SHA256()))).decode())
        self.assertTrue(tc.verify_display_sig(cert.public_bytes(serialization.Encoding.PEM), req))
        self.assertFalse(tc.verify_display_sig(cert, dict(req, verification_code="4712")))
        self.assertFalse(tc.verify_display_sig(cert, dict(req, display_sig="!!notb64")))

    def test_rejects_newline(self):
        with self.assertRaises(ValueError):
            tc.display_string("a", "b\nc", "EUR1.00", "1", "x", "y")


class PkiTest(unittest.TestCase):
    def setUp(self):
        self.root_k, self.iss_k, self.leaf_k = p256(), p256(), p256()
        self.root = make_cert("Root", self.root_k, ca=True, ku={"key_cert_sign": True, "crl_sign": True})
        self.iss = make_cert("Issuing", self.iss_k, "Root", self.root_k, ca=True,
                             ku={"key_cert_sign": True, "crl_sign": True})
        self.leaf = make_cert("+4915112345678", self.leaf_k, "Issuing", self.iss_k,
                              ku={"digital_signature": True, "content_commitment": True})

    def test_chain_ok_with_ca_pem_holding_both(self):
        path = tc.verify_chain(self.leaf, [], [self.root, self.iss])
        self.assertEqual([c.subject for c in path], [self.leaf.subject, self.iss.subject, self.root.subject])

    def test_chain_ok_with_intermediate_from_server(self):
        tc.verify_chain(self.leaf, [self.iss], [self.root])

    def test_chain_fails_for_foreign_root(self):
        other_root_k = p256()
        other_root = make_cert("Root", other_root_k, ca=True, ku={"key_cert_sign": True})
        with self.assertRaises(tc.ChainError):
            tc.verify_chain(self.leaf, [self.iss], [other_root])

    def test_chain_fails_when_issuer_not_ca(self):
        fake_iss = make_cert("Issuing", self.iss_k, "Root", self.root_k, ca=False)
        with self.assertRaises(tc.ChainError):
            tc.verify_chain(self.leaf, [fake_iss], [self.root])

    def test_chain_fails_when_expired(self):
        old = make_cert("+49", self.leaf_k, "Issuing", self.iss_k, not_before_days=-10, not_after_days=-1)
        with self.assertRaises(tc.ChainError):
            tc.verify_chain(old, [self.iss], [self.root])

    def test_csr(self):
        key, pem = tc.make_csr("Demo.FSP@fsp.xbank")
        csr = x509.load_pem_x509_csr(pem.encode())
        self.assertTrue(csr.is_signature_valid)
        self.assertEqual(csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, "Demo.FSP@fsp.xbank")
        self.assertIsInstance(csr.public_key().curve, ec.SECP256R1)
        self.assertEqual(csr.public_key().public_numbers(), key.public_key().public_numbers())
        self.assertIsInstance(csr.signature_hash_algorithm, hashes.SHA256)

    def test_load_multiple_pem(self):
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.iss, self.root))
        self.assertEqual(len(tc.load_pem_certs(pem)), 2)


class ProblemTest(unittest.TestCase):
    def test_parse_problem(self):
        body = (b'{"type":"urn:tmcs:problem:pin.wrong","title":"Wrong PIN","status":403,'
                b'"code":"pin.wrong","detail":"2 attempts left"}')
        p = tc.parse_problem(403, None, body)
        self.assertEqual((p.code, p.status, p.title, p.detail), ("pin.wrong", 403, "Wrong PIN", "2 attempts left"))

    def test_code_from_type(self):
        p = tc.parse_problem(409, None, b'{"type":"urn:tmcs:problem:ims.replay","status":409}')
        self.assertEqual(p.code, "ims.replay")

    def test_api_error(self):
        import email.message
        h = email.message.Message()
        h["Content-Type"] = "application/problem+json"
        e = tc.ApiError("POST", "/v1/fsp/messages", 409, h,
                        b'{"type":"urn:tmcs:problem:ims.replay","title":"Replay","status":409,"code":"ims.replay"}')
        self.assertEqual(e.code, "ims.replay")
        self.assertTrue(e.is_problem_json)
        self.assertIn("ims.replay", str(e))

    def test_non_json(self):
        self.assertIsNone(tc.parse_problem(500, None, b"<html>"))

    def test_http_base_rejected(self):
        with self.assertRaises(ValueError):
            tc.TmcsHttp("http://localhost:8443", ca_file="/dev/null")


class ScenarioAgainstFakeTest(unittest.TestCase):
    """Runs scenario.py end to end against fake_tmcs.py (an in-process
    stand-in written from the same contract).  Proves the scenario's
    plumbing only, not the real server's conformance."""

    def test_full_scenario(self):
        import contextlib
        import io
        import tempfile
        import fake_tmcs
        import scenario
        with tempfile.TemporaryDirectory() as d:
            fake = fake_tmcs.FakeTmcs(d).start()
            try:
                out, err = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    rc = scenario.main(["--base", fake.base, "--ca", fake.ca_file,
                                        "--operator-cert", fake.operator_cert,
                                        "--operator-key", fake.operator_key,
                                        "--workdir", os.path.join(d, "work")])
            finally:
                fake.stop()
            self.assertEqual(rc, 0, out.getvalue()[-3000:] + err.getvalue())
            self.assertIn("SCENARIO OK", out.getvalue())
            self.assertIn("activation.bad_code", out.getvalue())
            self.assertIn("ims.replay", out.getvalue())


if __name__ == "__main__":
    unittest.main(verbosity=2)
