"""Client library for the tmcs server, written only from the published
contract (/work/shared/CONTRACT.md, "tmcs - external contract (v1)").

Standard library plus `cryptography`.  Section references (§n) point to the
contract.  Every choice the contract leaves open is marked "ASSUMPTION".

Contents
  * encoding helpers (base64 standard with padding, base64url without padding)
  * HTTPS client (`http.client` + `ssl`, CA file, optional mTLS) and
    RFC 9457 problem+json parsing (§4)
  * PIN blocks, ECIES on P-256 (§7)
  * device key + `Authorization: TMCS-Device ...` header (§7)
  * the iMS message, its validation/normalisation and the canonical signing
    inputs M, F, C (`ims-c1`, §5)
  * signature helpers (ECDSA P-256/SHA-256 DER, RSA PKCS#1 v1.5/SHA-256)
  * handset display string and `display_sig` verification (§7)
  * certificate helpers: PEM loading, chain check up to a root in ca.pem,
    CSR creation for parties (§8)
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import http.client
import json
import os
import re
import ssl
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Optional, Sequence, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

__all__ = [
    # encoding
    "b64", "b64d", "b64url_nopad",
    # http
    "TmcsHttp", "ApiError", "Problem", "parse_problem",
    # pin blocks
    "PINBLOCK_INFO", "encrypt_pin_block", "activation_plaintext",
    "auth_plaintext", "transport_public_key", "ec_point_uncompressed",
    # device
    "DeviceKey", "device_signing_input", "device_authorization",
    # iMS
    "IMS", "ImsError", "normalise_timestamp", "normalise_amount",
    "parse_amount", "tier_for", "validate_party_id", "validate_ref",
    "dtbs_sha256", "utc_now_timestamp",
    # signatures
    "sign_sha256", "verify_sha256",
    # display
    "display_string", "display_amount", "verify_display_sig",
    # pki
    "load_pem_certs", "verify_chain", "ChainError", "make_csr",
    "key_to_pem", "cert_to_pem", "public_key_pem",
]

# ---------------------------------------------------------------------------
# encoding helpers
# ---------------------------------------------------------------------------


def b64(data: bytes) -> str:
    """Standard base64 with padding (§5: "base64 standard with padding")."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: Union[str, bytes]) -> bytes:
    """Strict standard-base64 decode (rejects non-alphabet characters)."""
    if isinstance(text, str):
        text = text.encode("ascii")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid standard base64: {exc}") from None


def b64url_nopad(data: bytes) -> str:
    """base64url without padding (used for `dtbs_sha256`, §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# ---------------------------------------------------------------------------
# HTTPS client and problem+json (§3, §4)
# ---------------------------------------------------------------------------


@dataclass
class Problem:
    """An RFC 9457 problem (§4)."""

    status: Optional[int]
    code: Optional[str]
    type: Optional[str]
    title: Optional[str]
    detail: Optional[str]
    raw: dict

    def __str__(self) -> str:
        parts = [f"{self.code or '?'}"]
        if self.status is not None:
            parts.append(f"(status {self.status})")
        if self.title:
            parts.append(f"- {self.title}")
        if self.detail:
            parts.append(f": {self.detail}")
        return " ".join(parts)


def parse_problem(status: int, headers, body: bytes) -> Optional[Problem]:
    """Parse a problem+json body.  Returns None when the body is not JSON.

    The contract says every error body is `application/problem+json`; we
    also accept `application/json` carrying the same members so that a
    mislabelled body is still readable (the caller can check the media type
    separately, see `ApiError.content_type`)."""
    try:
        obj = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict):
        return None
    code = obj.get("code")
    ptype = obj.get("type")
    if code is None and isinstance(ptype, str) and ptype.startswith("urn:tmcs:problem:"):
        code = ptype[len("urn:tmcs:problem:"):]
    st = obj.get("status")
    return Problem(
        status=st if isinstance(st, int) else status,
        code=code if isinstance(code, str) else None,
        type=ptype if isinstance(ptype, str) else None,
        title=obj.get("title") if isinstance(obj.get("title"), str) else None,
        detail=obj.get("detail") if isinstance(obj.get("detail"), str) else None,
        raw=obj,
    )


class ApiError(Exception):
    """A response whose status was not one of the expected ones."""

    def __init__(self, method: str, path: str, status: int, headers, body: bytes):
        self.method = method
        self.path = path
        self.status = status
        self.headers = headers
        self.body = body
        self.content_type = (headers.get("Content-Type") or "") if headers is not None else ""
        self.problem = parse_problem(status, headers, body)
        if self.problem is not None:
            what = str(self.problem)
        else:
            snippet = body[:300].decode("utf-8", "replace")
            what = f"non-problem body: {snippet!r}"
        super().__init__(f"{method} {path} -> HTTP {status}: {what}")

    @property
    def code(self) -> Optional[str]:
        return self.problem.code if self.problem else None

    @property
    def is_problem_json(self) -> bool:
        return self.content_type.split(";")[0].strip().lower() == "application/problem+json"


class TmcsHttp:
    """Minimal HTTPS client.

    `base` is e.g. ``https://localhost:8443`` (a path prefix such as
    ``https://host/tmcs`` is allowed and is prepended to every request path;
    the device signature then covers the full path as sent).
    The server certificate is verified against `ca_file`; `cert_file` /
    `key_file` add a client certificate (mTLS) for the fsp/operator/... APIs.
    A fresh connection is used per request (simple and stateless).
    """

    def __init__(
        self,
        base: str,
        ca_file: str,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        *,
        check_hostname: bool = True,
        timeout: float = 30.0,
    ):
        u = urllib.parse.urlsplit(base)
        if u.scheme != "https":
            raise ValueError(f"base URL must be https://..., got {base!r}")
        if not u.hostname:
            raise ValueError(f"base URL has no host: {base!r}")
        self.base = base
        self.host = u.hostname
        self.port = u.port or 443
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if not check_hostname:
            ctx.check_hostname = False  # the chain is still verified (CERT_REQUIRED)
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file)
        self.ctx = ctx

    def full_path(self, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        return self.prefix + path

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
    ):
        """Send one request; return ``(status, headers, body_bytes)``.

        `headers` of the result is an `http.client.HTTPMessage`
        (case-insensitive `.get`)."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        try:
            hdrs = {"Accept": "application/json, application/problem+json, */*"}
            if headers:
                hdrs.update(headers)
            conn.request(method, self.full_path(path), body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.headers, data
        finally:
            conn.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body=None,
        body: Optional[bytes] = None,
        content_type: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        expect: Iterable[int] = (200,),
    ):
        """Request with optional JSON body; returns ``(status, headers, obj)``
        where `obj` is the parsed JSON (or None for an empty body).
        Raises `ApiError` (carrying the parsed problem) when the status is
        not in `expect`."""
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            content_type = content_type or "application/json"
        if content_type:
            hdrs["Content-Type"] = content_type
        status, rh, data = self.request(method, path, body=body, headers=hdrs)
        expect = tuple(expect)
        if status not in expect:
            raise ApiError(method, self.full_path(path), status, rh, data)
        obj = None
        if data:
            try:
                obj = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise ApiError(method, self.full_path(path), status, rh, data) from None
        return status, rh, obj

    def get_bytes(self, path: str, headers: Optional[Mapping[str, str]] = None) -> bytes:
        status, rh, data = self.request("GET", path, headers=headers)
        if status != 200:
            raise ApiError("GET", self.full_path(path), status, rh, data)
        return data


# ---------------------------------------------------------------------------
# PIN blocks (§7)
# ---------------------------------------------------------------------------

PINBLOCK_INFO = b"tmcs-pinblock-v1"   # HKDF info
PINBLOCK_AAD = b"tmcs-pinblock-v1"    # AES-GCM associated data


def ec_point_uncompressed(pub: ec.EllipticCurvePublicKey) -> bytes:
    """Uncompressed SEC1 point (0x04 || X || Y, 65 bytes for P-256)."""
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _require_p256(pub, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP256R1):
        raise ValueError(f"{what} is not an EC P-256 public key")
    return pub


def transport_public_key(source) -> ec.EllipticCurvePublicKey:
    """Transport public key from PEM bytes/str (first certificate), an
    `x509.Certificate` or an EC public key."""
    if isinstance(source, (bytes, str)):
        source = load_pem_certs(source)[0]
    if isinstance(source, x509.Certificate):
        source = source.public_key()
    return _require_p256(source, "transport key")


def _no_sep(name: str, value: str) -> str:
    value = str(value)
    if "|" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{name} must not contain '|' or a line break")
    if value == "":
        raise ValueError(f"{name} must not be empty")
    return value


def activation_plaintext(msisdn: str, activation_code: str, new_pin: str) -> bytes:
    """`v1|activate|<msisdn>|<activation_code>|<new PIN>` (UTF-8)."""
    return "|".join([
        "v1", "activate",
        _no_sep("msisdn", msisdn),
        _no_sep("activation_code", activation_code),
        _no_sep("PIN", new_pin),
    ]).encode("utf-8")


def auth_plaintext(request_id: str, nonce: str, dtbs: str, pin: str) -> bytes:
    """`v1|auth|<request_id>|<nonce>|<dtbs_sha256>|<PIN>` (UTF-8)."""
    return "|".join([
        "v1", "auth",
        _no_sep("request_id", request_id),
        _no_sep("nonce", nonce),
        _no_sep("dtbs_sha256", dtbs),
        _no_sep("PIN", pin),
    ]).encode("utf-8")


def encrypt_pin_block(
    transport,
    plaintext: Union[bytes, str],
    *,
    _ephemeral: Optional[ec.EllipticCurvePrivateKey] = None,
    _nonce: Optional[bytes] = None,
) -> str:
    """ECIES PIN block, returns ``b64(E || N || CT)``.

    E  = fresh ephemeral P-256 public key, uncompressed SEC1 (65 bytes)
    Z  = ECDH x-coordinate (32 bytes)
    T  = transport public key, uncompressed SEC1
    K  = HKDF-SHA256(ikm Z, salt E||T, info "tmcs-pinblock-v1", 32)
    N  = 12 random bytes
    CT = AES-256-GCM(K, N, plaintext, aad "tmcs-pinblock-v1") with tag appended

    `_ephemeral` / `_nonce` exist only for deterministic tests."""
    tpub = transport_public_key(transport)
    if isinstance(plaintext, str):
        plaintext = plaintext.encode("utf-8")
    eph = _ephemeral or ec.generate_private_key(ec.SECP256R1())
    E = ec_point_uncompressed(eph.public_key())
    T = ec_point_uncompressed(tpub)
    Z = eph.exchange(ec.ECDH(), tpub)  # x-coordinate of the shared point
    assert len(E) == 65 and len(T) == 65 and len(Z) == 32
    K = HKDF(algorithm=hashes.SHA256(), length=32, salt=E + T, info=PINBLOCK_INFO).derive(Z)
    N = _nonce if _nonce is not None else os.urandom(12)
    if len(N) != 12:
        raise ValueError("nonce must be 12 bytes")
    CT = AESGCM(K).encrypt(N, plaintext, PINBLOCK_AAD)
    return b64(E + N + CT)


# ---------------------------------------------------------------------------
# device key and Authorization header (§7)
# ---------------------------------------------------------------------------

DEVICE_SIG_PREFIX = "tmcs-dev-v1"


def _path_without_query(path: str) -> str:
    # ASSUMPTION: the contract writes `<path>`; we sign the request path as
    # sent (including any base-URL prefix), without '?query' and '#fragment'.
    return path.split("#", 1)[0].split("?", 1)[0]


def device_signing_input(method: str, path: str, msisdn: str, ts: Union[int, str]) -> bytes:
    """`tmcs-dev-v1\\n<METHOD>\\n<path>\\n<msisdn>\\n<ts>\\n`"""
    for name, v in (("method", method), ("path", path), ("msisdn", msisdn), ("ts", str(ts))):
        if "\n" in v or "\r" in v:
            raise ValueError(f"{name} must not contain a line break")
    return (
        f"{DEVICE_SIG_PREFIX}\n{method.upper()}\n{_path_without_query(path)}\n{msisdn}\n{ts}\n"
    ).encode("utf-8")


def device_authorization(key: ec.EllipticCurvePrivateKey, method: str, path: str,
                         msisdn: str, ts: Optional[int] = None) -> str:
    """`TMCS-Device msisdn="+…",ts="<unix seconds>",sig="<b64>"`"""
    if ts is None:
        ts = int(time.time())
    if '"' in msisdn:
        raise ValueError("msisdn must not contain '\"'")
    sig = key.sign(device_signing_input(method, path, msisdn, ts), ec.ECDSA(hashes.SHA256()))
    return f'TMCS-Device msisdn="{msisdn}",ts="{int(ts)}",sig="{b64(sig)}"'


class DeviceKey:
    """The handset's device key (EC P-256)."""

    def __init__(self, key: Optional[ec.EllipticCurvePrivateKey] = None):
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        _require_p256(self.key.public_key(), "device key")

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()

    def spki_der(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def spki_der_b64(self) -> str:
        """`device_public_key` for activation: b64 SPKI DER."""
        return b64(self.spki_der())

    def authorization(self, method: str, path: str, msisdn: str, ts: Optional[int] = None) -> str:
        return device_authorization(self.key, method, path, msisdn, ts)

    def headers(self, method: str, path: str, msisdn: str, ts: Optional[int] = None) -> dict:
        return {"Authorization": self.authorization(method, path, msisdn, ts)}


# ---------------------------------------------------------------------------
# iMS (§5)
# ---------------------------------------------------------------------------


class ImsError(ValueError):
    pass


# ISO 4217 minor units for the currencies a client is likely to use.
# ASSUMPTION: unknown currencies are rejected client-side (the server only
# accepts configured ones anyway, `ims.currency_unsupported`).
MINOR_UNITS = {
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2,
    "PLN": 2, "CZK": 2, "HUF": 2, "CAD": 2, "AUD": 2, "CNY": 2, "INR": 2,
    "KES": 2, "ZAR": 2, "JPY": 0, "KRW": 0, "ISK": 0, "KWD": 3, "BHD": 3,
    "OMR": 3, "JOD": 3, "TND": 3,
}

# Policy defaults of §2 (EUR and USD): small <= 50.00, medium <= 1000.00, large above.
DEFAULT_TIERS = {"EUR": (5000, 100000), "USD": (5000, 100000)}

_LOCAL_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DOMAIN_RE = re.compile(r"[a-z0-9-]{1,63}")
_TEL_RE = re.compile(r"tel:\+[0-9]{8,15}")
_REF_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ROLES = ("person", "merchant", "fsp", "bank")


def validate_party_id(pid: str, roles: Sequence[str] = _ROLES, allow_tel: bool = True) -> str:
    """`local@role.domain` or `tel:+` 8-15 digits."""
    if allow_tel and _TEL_RE.fullmatch(pid):
        return pid
    if "@" in pid:
        local, _, rest = pid.partition("@")
        role, dot, domain = rest.partition(".")
        if (_LOCAL_RE.fullmatch(local) and dot and role in roles and _DOMAIN_RE.fullmatch(domain)):
            return pid
    raise ImsError(f"invalid party id {pid!r} (allowed roles {list(roles)}, tel: {allow_tel})")


def validate_ref(ref: str) -> str:
    if not _REF_RE.fullmatch(ref):
        raise ImsError(f"invalid ref {ref!r}")
    return ref


_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_PAPER_TS_RE = re.compile(r"(\d{2})\.(\d{2})\.(\d{4}) (\d{2}):(\d{2}):(\d{2})")


def normalise_timestamp(ts: str) -> str:
    """RFC 3339 or `DD.MM.YYYY HH:MM:SS` (UTC) -> `YYYY-MM-DDTHH:MM:SSZ`.

    ASSUMPTION: fractional seconds are truncated; offsets are converted to UTC;
    a leap second (:60) is rejected."""
    m = _RFC3339_RE.fullmatch(ts)
    if m:
        y, mo, d, h, mi, s = (int(x) for x in m.group(1, 2, 3, 4, 5, 6))
        off = m.group(8)
        try:
            t = _dt.datetime(y, mo, d, h, mi, s, tzinfo=_dt.timezone.utc)
        except ValueError as exc:
            raise ImsError(f"invalid timestamp {ts!r}: {exc}") from None
        if off not in ("Z", "z"):
            sign = 1 if off[0] == "+" else -1
            oh, om = int(off[1:3]), int(off[4:6])
            if oh > 23 or om > 59:
                raise ImsError(f"invalid offset in {ts!r}")
            t -= sign * _dt.timedelta(hours=oh, minutes=om)
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    m = _PAPER_TS_RE.fullmatch(ts)
    if m:
        d, mo, y, h, mi, s = (int(x) for x in m.groups())
        try:
            t = _dt.datetime(y, mo, d, h, mi, s)
        except ValueError as exc:
            raise ImsError(f"invalid timestamp {ts!r}: {exc}") from None
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    raise ImsError(f"invalid timestamp {ts!r}")


def utc_now_timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_AMOUNT_RE = re.compile(r"([A-Z]{3})([0-9]+)(?:\.([0-9]+))?")


def parse_amount(amount: str) -> tuple[str, int]:
    """`EUR25.00` -> ("EUR", 2500) (integer minor units)."""
    m = _AMOUNT_RE.fullmatch(amount)
    if not m:
        raise ImsError(f"invalid amount {amount!r}")
    cur, whole, frac = m.groups()
    if cur not in MINOR_UNITS:
        raise ImsError(f"currency {cur} unknown to this client")
    digits = MINOR_UNITS[cur]
    if digits == 0:
        if frac is not None:
            raise ImsError(f"{cur} has no minor units: {amount!r}")
        minor = int(whole)
    else:
        if frac is None or len(frac) != digits:
            raise ImsError(f"{cur} needs exactly {digits} decimals: {amount!r}")
        minor = int(whole) * 10 ** digits + int(frac)
    if minor <= 0:
        raise ImsError(f"amount must be positive: {amount!r}")
    return cur, minor


def format_amount(cur: str, minor: int) -> str:
    digits = MINOR_UNITS[cur]
    if digits == 0:
        return f"{cur}{minor}"
    q, r = divmod(minor, 10 ** digits)
    return f"{cur}{q}.{r:0{digits}d}"


def normalise_amount(amount: str) -> str:
    """`CUR AMT` rendered back from integer minor units (ASSUMPTION: this
    drops leading zeros, e.g. `EUR025.00` -> `EUR25.00`)."""
    return format_amount(*parse_amount(amount))


def tier_for(amount: str, tiers: Mapping[str, tuple[int, int]] = DEFAULT_TIERS) -> str:
    """Tier under the default policy of §2 (ASSUMPTION: "up to" is inclusive)."""
    cur, minor = parse_amount(amount)
    if cur not in tiers:
        raise ImsError(f"no tiers known for {cur}")
    small_max, medium_max = tiers[cur]
    if minor <= small_max:
        return "small"
    if minor <= medium_max:
        return "medium"
    return "large"


def _clean_value(name: str, value: str) -> str:
    if value is None:
        raise ImsError(f"{name} missing")
    if "\r" in value or "\n" in value:
        raise ImsError(f"{name} contains CR or LF")
    return value


def dtbs_sha256(c_bytes: bytes) -> str:
    """base64url (no padding) of SHA-256(C)."""
    return b64url_nopad(hashlib.sha256(c_bytes).digest())


@dataclass
class IMS:
    """One iMS message.  Signature fields hold standard base64 text."""

    type: str
    from_id: str
    to_id: str
    timestamp: str
    amount: str
    account_payable: str
    account_receivable: str
    ref: Optional[str] = None
    from_sign: str = ""
    to_sign: str = ""
    fsp_sign: str = ""

    # -- validation / normalisation --------------------------------------
    def normalised(self, strict: bool = True) -> "IMS":
        """Copy with values normalised as §5 says (timestamp, amount) and
        checked.  `strict=False` skips the party-id/type syntax checks
        (useful for the contract's example, which has placeholders)."""
        for name in ("type", "from_id", "to_id", "timestamp", "amount",
                     "account_payable", "account_receivable"):
            _clean_value(name, getattr(self, name))
        if self.ref is not None:
            _clean_value("ref", self.ref)
        if strict:
            if self.type not in ("small", "medium", "large"):
                raise ImsError(f"invalid type {self.type!r}")
            if self.ref is not None:
                validate_ref(self.ref)
            validate_party_id(self.from_id, roles=("person",), allow_tel=True)
            validate_party_id(self.to_id, roles=("merchant", "person"), allow_tel=False)
        return replace(
            self,
            timestamp=normalise_timestamp(self.timestamp),
            amount=normalise_amount(self.amount),
        )

    # -- canonical signing inputs (ims-c1) -------------------------------
    def canonical_m(self) -> bytes:
        n = self.normalised(strict=False)
        return (
            "ims-c1\n"
            f"type:{n.type}\n"
            f"ref:{n.ref or ''}\n"
            f"from.id:{n.from_id}\n"
            f"to.id:{n.to_id}\n"
            f"timestamp:{n.timestamp}\n"
            f"amount:{n.amount}\n"
        ).encode("utf-8")

    def canonical_f(self) -> bytes:
        n = self.normalised(strict=False)
        if not n.to_sign:
            raise ImsError("to/sign (merchant signature) missing for F")
        return self.canonical_m() + (
            f"accountPayable:{n.account_payable}\n"
            f"accountReceivable:{n.account_receivable}\n"
            f"to.sign:{n.to_sign}\n"
        ).encode("utf-8")

    def canonical_c(self) -> bytes:
        if not self.fsp_sign:
            raise ImsError("FSPsign missing for C")
        return self.canonical_f() + f"fsp.sign:{self.fsp_sign}\n".encode("utf-8")

    def dtbs_sha256(self) -> str:
        return dtbs_sha256(self.canonical_c())

    # -- signing ----------------------------------------------------------
    def sign_merchant(self, merchant_key) -> bytes:
        """Merchant signs M -> `to/sign`."""
        sig = sign_sha256(merchant_key, self.canonical_m())
        self.to_sign = b64(sig)
        return sig

    def sign_fsp(self, fsp_key) -> bytes:
        """FSP signs F -> `FSPsign`."""
        sig = sign_sha256(fsp_key, self.canonical_f())
        self.fsp_sign = b64(sig)
        return sig

    # -- XML --------------------------------------------------------------
    def to_xml(self) -> bytes:
        """The XML of §5 (UTF-8, no XML declaration, `from/sign` as given,
        normally empty for submission)."""
        n = self.normalised(strict=False)

        def el(tag, val):
            return f"<{tag}>{_xml_escape(val)}</{tag}>"

        lines = ["<iMS>", "  " + el("type", n.type)]
        if n.ref is not None:
            lines.append("  " + el("ref", n.ref))
        lines += [
            "  <address>",
            f"    <from>{el('id', n.from_id)}{el('sign', n.from_sign)}</from>",
            f"    <to>{el('id', n.to_id)}{el('sign', n.to_sign)}</to>",
            "    " + el("FSPsign", n.fsp_sign),
            "    " + el("timestamp", n.timestamp),
            "  </address>",
            "  <data>",
            "    " + el("accountPayable", n.account_payable),
            "    " + el("accountReceivable", n.account_receivable),
            "    " + el("amount", n.amount),
            "  </data>",
            "</iMS>",
        ]
        xml = "\n".join(lines) + "\n"
        data = xml.encode("utf-8")
        if len(data) > 16 * 1024:
            raise ImsError("iMS larger than 16 KiB")
        return data

    @classmethod
    def from_xml(cls, data: Union[bytes, str]) -> "IMS":
        """Parse an iMS (e.g. the signed one returned by GET /v1/fsp/requests).
        Rejects DTDs, processing instructions, unknown and repeated elements;
        values are trimmed and must not contain CR/LF."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if len(data) > 16 * 1024:
            raise ImsError("iMS larger than 16 KiB")
        low = data.lower()
        if b"<!doctype" in low or b"<!entity" in low:
            raise ImsError("DTD/entity declarations not allowed")
        body = data
        if body.lstrip().startswith(b"<?xml"):
            end = body.find(b"?>")
            body = body[end + 2:]
        if b"<?" in body:
            raise ImsError("processing instructions not allowed")
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise ImsError(f"malformed XML: {exc}") from None

        def children(elem, allowed, required):
            seen = {}
            for ch in elem:
                if ch.tag not in allowed:
                    raise ImsError(f"unknown element <{ch.tag}> in <{elem.tag}>")
                if ch.tag in seen:
                    raise ImsError(f"repeated element <{ch.tag}> in <{elem.tag}>")
                seen[ch.tag] = ch
            for r in required:
                if r not in seen:
                    raise ImsError(f"missing <{r}> in <{elem.tag}>")
            if elem.text and elem.text.strip(" \t\r\n"):
                raise ImsError(f"unexpected text in <{elem.tag}>")
            for ch in elem:
                if ch.tail and ch.tail.strip(" \t\r\n"):
                    raise ImsError(f"unexpected text after <{ch.tag}>")
            return seen

        def text(elem):
            if len(elem):
                raise ImsError(f"<{elem.tag}> must not have children")
            v = (elem.text or "").strip(" \t\r\n")
            if "\r" in v or "\n" in v:
                raise ImsError(f"<{elem.tag}> value contains CR or LF")
            return v

        if root.tag != "iMS":
            raise ImsError(f"root element is <{root.tag}>, not <iMS>")
        top = children(root, ("type", "ref", "address", "data"), ("type", "address", "data"))
        addr = children(top["address"], ("from", "to", "FSPsign", "timestamp"),
                        ("from", "to", "FSPsign", "timestamp"))
        frm = children(addr["from"], ("id", "sign"), ("id", "sign"))
        to = children(addr["to"], ("id", "sign"), ("id", "sign"))
        dat = children(top["data"], ("accountPayable", "accountReceivable", "amount"),
                       ("accountPayable", "accountReceivable", "amount"))
        return cls(
            type=text(top["type"]),
            ref=text(top["ref"]) if "ref" in top else None,
            from_id=text(frm["id"]),
            from_sign=text(frm["sign"]),
            to_id=text(to["id"]),
            to_sign=text(to["sign"]),
            fsp_sign=text(addr["FSPsign"]),
            timestamp=text(addr["timestamp"]),
            account_payable=text(dat["accountPayable"]),
            account_receivable=text(dat["accountReceivable"]),
            amount=text(dat["amount"]),
        )


def _xml_escape(v: str) -> str:
    return (v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
             .replace('"', "&quot;").replace("'", "&apos;"))


# ---------------------------------------------------------------------------
# signatures
# ---------------------------------------------------------------------------


def sign_sha256(private_key, data: bytes) -> bytes:
    """ECDSA P-256/SHA-256 (DER Ecdsa-Sig-Value) or RSA PKCS#1 v1.5/SHA-256."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < 2048:
            raise ValueError("RSA keys must be >= 2048 bits")
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    raise TypeError("unsupported key type")


def verify_sha256(signer, signature: Union[bytes, str], data: bytes) -> bool:
    """Verify a signature as the signer's certificate (or public key) says.
    `signature` may be DER bytes or its standard base64.  Returns bool."""
    if isinstance(signature, str):
        try:
            signature = b64d(signature)
        except ValueError:
            return False
    pub = signer.public_key() if isinstance(signer, x509.Certificate) else signer
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------------------
# handset display (§7)
# ---------------------------------------------------------------------------


def display_amount(display: Mapping, ims_amount: Optional[str] = None) -> str:
    """The `amount` value of the display string, "as in the iMS" (e.g.
    `EUR25.00`).  ASSUMPTION: if `display.amount` already carries the
    currency code it is used verbatim, otherwise `display.currency` +
    `display.amount` is used."""
    if ims_amount is not None:
        return ims_amount
    amt = str(display.get("amount", ""))
    cur = str(display.get("currency", ""))
    if re.fullmatch(r"[A-Z]{3}.*", amt):
        return amt
    return cur + amt


def display_string(request_id: str, payee: str, amount: str, verification_code: str,
                   dtbs: str, expires_at: str) -> bytes:
    """`tmcs-display-v1\\n` + `key:value\\n` for request_id, payee, amount,
    verification_code, dtbs_sha256, expires_at (in that order)."""
    items = [("request_id", request_id), ("payee", payee), ("amount", amount),
             ("verification_code", verification_code), ("dtbs_sha256", dtbs),
             ("expires_at", expires_at)]
    out = "tmcs-display-v1\n"
    for k, v in items:
        v = str(v)
        if "\n" in v or "\r" in v:
            raise ValueError(f"display value {k} contains a line break")
        out += f"{k}:{v}\n"
    return out.encode("utf-8")


def display_string_from_response(req: Mapping, ims_amount: Optional[str] = None) -> bytes:
    """Display string built from a `GET /v1/handset/requests/{id}` body."""
    d = req.get("display") or {}
    return display_string(
        request_id=str(req["request_id"]),
        payee=str(d.get("payee", "")),
        amount=display_amount(d, ims_amount),
        verification_code=str(req["verification_code"]),
        dtbs=str(req["dtbs_sha256"]),
        expires_at=str(req["expires_at"]),
    )


def verify_display_sig(display_cert, req: Mapping, ims_amount: Optional[str] = None) -> bool:
    """Verify `display_sig` of a handset request body with the display
    certificate (PEM bytes/str or `x509.Certificate`)."""
    if isinstance(display_cert, (bytes, str)):
        display_cert = load_pem_certs(display_cert)[0]
    return verify_sha256(display_cert, str(req.get("display_sig", "")),
                         display_string_from_response(req, ims_amount))


# ---------------------------------------------------------------------------
# PKI helpers
# ---------------------------------------------------------------------------


class ChainError(Exception):
    pass


def load_pem_certs(pem: Union[bytes, str]) -> list[x509.Certificate]:
    if isinstance(pem, str):
        pem = pem.encode("ascii")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ValueError(f"no PEM certificate: {exc}") from None
    if not certs:
        raise ValueError("no PEM certificate")
    return certs


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_to_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_pem(pub_or_cert) -> bytes:
    pub = pub_or_cert.public_key() if isinstance(pub_or_cert, x509.Certificate) else pub_or_cert
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_validity(cert: x509.Certificate, now: _dt.datetime, label: str):
    if now < cert.not_valid_before_utc or now > cert.not_valid_after_utc:
        raise ChainError(f"{label} {cert.subject.rfc4514_string()} not valid at {now.isoformat()}")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not bc.ca:
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            return False
    except x509.ExtensionNotFound:
        pass
    return True


def verify_chain(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                 anchors: Sequence[x509.Certificate], now: Optional[_dt.datetime] = None,
                 max_depth: int = 8) -> list[x509.Certificate]:
    """Check signatures issuer -> subject from `leaf` up to a self-signed
    root contained in `anchors` (the ca.pem file).  Issuers must be CAs
    (basicConstraints CA, keyCertSign when keyUsage is present); every
    certificate must be within its validity period.  Intermediates may come
    from the server (`chain`) or from ca.pem.  Returns the path
    leaf..root or raises `ChainError`."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    anchor_ders = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
    pool = list(intermediates) + list(anchors)
    path = [leaf]
    cur = leaf
    _check_validity(cur, now, "certificate")
    for _ in range(max_depth):
        cur_der = cur.public_bytes(serialization.Encoding.DER)
        if cur_der in anchor_ders and cur.issuer == cur.subject:
            try:
                cur.verify_directly_issued_by(cur)
            except (InvalidSignature, ValueError, TypeError) as exc:
                raise ChainError(f"root {cur.subject.rfc4514_string()} self-signature invalid: {exc}")
            return path
        issuer = None
        errors = []
        for cand in pool:
            if cand.subject != cur.issuer:
                continue
            if cand.public_bytes(serialization.Encoding.DER) == cur_der:
                continue
            try:
                cur.verify_directly_issued_by(cand)
            except (InvalidSignature, ValueError, TypeError) as exc:
                errors.append(str(exc) or type(exc).__name__)
                continue
            issuer = cand
            break
        if issuer is None:
            extra = f" ({'; '.join(errors)})" if errors else ""
            raise ChainError(
                f"no valid issuer for {cur.subject.rfc4514_string()} "
                f"(issuer {cur.issuer.rfc4514_string()}){extra}")
        if not _is_ca(issuer):
            raise ChainError(f"issuer {issuer.subject.rfc4514_string()} is not a CA")
        _check_validity(issuer, now, "issuer")
        path.append(issuer)
        cur = issuer
    raise ChainError("chain too long")


def make_csr(party_id: str, key=None, kind: Optional[str] = None):
    """Create a key (EC P-256 unless given) and a PEM CSR for a party.
    ASSUMPTION: the contract does not say what the CSR subject must hold;
    we use CN=<party_id> (plus OU=<kind> when given), signed SHA-256.
    Returns ``(private_key, csr_pem_str)``."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, party_id)]
    if kind:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name(attrs))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
