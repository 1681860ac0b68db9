#!/usr/bin/env python3
"""End-to-end scenario against a running tmcs server, using only the
published contract (CONTRACT.md v1).

  python3 scenario.py --base https://localhost:8443 --ca DATA/ca.pem \
      --operator-cert DATA/clients/operator.crt \
      --operator-key DATA/clients/operator.key [--steps activation|full]

Prints each step and `SCENARIO OK` at the end; exits 1 with a clear message
on the first failure (2 on usage errors).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import tmcs_client as tc


class Failure(Exception):
    pass


_step_no = 0
_current = "setup"


def step(title: str):
    global _step_no, _current
    _step_no += 1
    _current = f"step {_step_no}: {title}"
    print(f"\n== [{_step_no}] {title}", flush=True)


def info(msg: str):
    print(f"   {msg}", flush=True)


def ok(msg: str):
    print(f"   ok: {msg}", flush=True)


def warn(msg: str):
    print(f"   NOTE: {msg}", flush=True)


def check(cond: bool, msg: str):
    if not cond:
        raise Failure(msg)
    ok(msg)


def expect_error(fn, what: str) -> tc.ApiError:
    """Run `fn` (an API call with expect=()) and require a 4xx problem."""
    try:
        fn()
    except tc.ApiError as exc:
        if not (400 <= exc.status < 500):
            raise Failure(f"{what}: expected a 4xx error, got HTTP {exc.status}: {exc}")
        if not exc.is_problem_json:
            warn(f"error Content-Type is {exc.content_type!r}, not application/problem+json (§4)")
        if exc.problem is None or not exc.code:
            raise Failure(f"{what}: HTTP {exc.status} without a problem `code` (§4): {exc.body[:300]!r}")
        info(f"rejected as expected: HTTP {exc.status}, code {exc.code!r}"
             + (f", detail {exc.problem.detail!r}" if exc.problem.detail else ""))
        return exc
    raise Failure(f"{what}: expected an error, but the call succeeded")


def ec_p256(pub) -> bool:
    return isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1)


def spki(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def openssl_verify_chain(workdir: str, ca_file: str, leaf_pem: bytes, chain_pem: bytes, name: str):
    """Cross-check with `openssl verify -CAfile ca.pem [-untrusted chain] leaf`."""
    if not openssl_available():
        warn("openssl not found; skipping `openssl verify` cross-check")
        return
    leaf_path = os.path.join(workdir, f"{name}.crt")
    with open(leaf_path, "wb") as f:
        f.write(leaf_pem)
    cmd = ["openssl", "verify", "-CAfile", ca_file]
    if chain_pem.strip():
        chain_path = os.path.join(workdir, f"{name}.chain.pem")
        with open(chain_path, "wb") as f:
            f.write(chain_pem)
        cmd += ["-untrusted", chain_path]
    cmd.append(leaf_path)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise Failure(f"`{' '.join(cmd)}` failed: {r.stdout.strip()} {r.stderr.strip()}")
    ok(f"openssl verify: {r.stdout.strip()}")


def check_chain(label: str, leaf: x509.Certificate, extra: list, anchors: list):
    try:
        path = tc.verify_chain(leaf, extra, anchors)
    except tc.ChainError as exc:
        raise Failure(f"{label}: chain check against ca.pem failed: {exc}")
    ok(f"{label} chains to ca.pem: " + " <- ".join(c.subject.rfc4514_string() for c in reversed(path)))
    return path


def write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---------------------------------------------------------------------------


def run(args) -> None:
    workdir = args.workdir or tempfile.mkdtemp(prefix="tmcs-scenario-")
    os.makedirs(workdir, exist_ok=True)
    print(f"tmcs scenario against {args.base} (steps: {args.steps}); artefacts in {workdir}")

    kw = dict(check_hostname=not args.no_check_hostname, timeout=args.timeout)
    public = tc.TmcsHttp(args.base, args.ca, **kw)  # handset / anonymous
    operator = tc.TmcsHttp(args.base, args.ca, args.operator_cert, args.operator_key, **kw)

    with open(args.ca, "rb") as f:
        anchors = tc.load_pem_certs(f.read())

    # ---------------------------------------------------------------- PKI
    step("public PKI: GET /pki/ca.pem, /pki/transport.pem, /pki/display.pem")
    ca_served = tc.load_pem_certs(public.get_bytes("/pki/ca.pem"))
    served_ders = {c.public_bytes(serialization.Encoding.DER) for c in ca_served}
    missing = [a for a in anchors if a.public_bytes(serialization.Encoding.DER) not in served_ders]
    if missing:
        warn(f"{len(missing)} certificate(s) of the local ca.pem are not in /pki/ca.pem")
    else:
        ok(f"/pki/ca.pem holds {len(ca_served)} certificate(s), including every one of the local ca.pem")

    transport_certs = tc.load_pem_certs(public.get_bytes("/pki/transport.pem"))
    transport = transport_certs[0]
    check_chain("transport certificate", transport, transport_certs[1:] + ca_served, anchors)
    check(ec_p256(transport.public_key()), "transport key is EC P-256")
    try:
        ku = transport.extensions.get_extension_for_class(x509.KeyUsage).value
        check(ku.key_agreement, "transport certificate keyUsage has keyAgreement")
    except x509.ExtensionNotFound:
        raise Failure("transport certificate has no keyUsage extension (§7 says keyAgreement)")

    display_certs = tc.load_pem_certs(public.get_bytes("/pki/display.pem"))
    display_cert = display_certs[0]
    check_chain("display certificate", display_cert, display_certs[1:] + ca_served, anchors)
    check(ec_p256(display_cert.public_key()), "display key is EC P-256 (ECDSA)")

    # --------------------------------------------------------- activation
    msisdn = args.msisdn or ("+49151" + "".join(secrets.choice("0123456789") for _ in range(8)))
    pin = args.pin
    if args.activation_code:
        step(f"subscriber {msisdn}: using the activation code given on the command line")
        activation_code = args.activation_code
    else:
        step(f"operator registers subscriber {msisdn}: POST /v1/admin/subscribers")
        try:
            status, _, sub = operator.call(
                "POST", "/v1/admin/subscribers",
                json_body={"msisdn": msisdn, "display_name": "Scenario Subscriber",
                           "kyc_ref": "KYC-" + secrets.token_hex(6)},
                expect=(201,))
        except tc.ApiError as exc:
            raise Failure(str(exc))
        for k in ("subscriber_id", "activation_code", "activation_expires_at"):
            check(k in sub, f"response has `{k}`")
        activation_code = str(sub["activation_code"])
        info(f"subscriber_id={sub['subscriber_id']} activation_expires_at={sub['activation_expires_at']}")

    step("handset activates: POST /v1/handset/activate with a PIN block")
    device = tc.DeviceKey()
    write(os.path.join(workdir, "device.key"), tc.key_to_pem(device.key))
    pin_block = tc.encrypt_pin_block(transport, tc.activation_plaintext(msisdn, activation_code, pin))
    activate_body = {"msisdn": msisdn, "activation_code": activation_code,
                     "device_public_key": device.spki_der_b64(), "pin_block": pin_block}
    try:
        _, _, act = post_json(public, "POST", "/v1/handset/activate", activate_body, (200,))
    except tc.ApiError as exc:
        raise Failure(str(exc))
    check(isinstance(act, dict) and "certificate" in act and "chain" in act,
          "activation response has `certificate` and `chain`")

    step("check the subscriber certificate")
    sub_certs = tc.load_pem_certs(act["certificate"])
    sub_cert = sub_certs[0]
    chain_pem = act.get("chain") or ""
    chain_certs = tc.load_pem_certs(chain_pem) if chain_pem.strip() else []
    write(os.path.join(workdir, "subscriber.crt"), tc.cert_to_pem(sub_cert))
    info(f"subject {sub_cert.subject.rfc4514_string()}, serial {sub_cert.serial_number:x}, "
         f"issuer {sub_cert.issuer.rfc4514_string()}")
    check_chain("subscriber certificate", sub_cert, sub_certs[1:] + chain_certs, anchors)
    openssl_verify_chain(workdir, args.ca, tc.cert_to_pem(sub_cert),
                         b"".join(tc.cert_to_pem(c) for c in sub_certs[1:] + chain_certs), "subscriber")
    sub_pub = sub_cert.public_key()
    check(ec_p256(sub_pub), "subscriber public key is EC P-256")
    check(spki(sub_pub) != device.spki_der(), "subscriber key is NOT the device key (generated in the HSM)")
    try:
        ku = sub_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise Failure("subscriber certificate has no keyUsage extension")
    check(ku.digital_signature, "keyUsage has digitalSignature")
    check(ku.content_commitment, "keyUsage has contentCommitment (nonRepudiation)")

    step("the same activation code again must be refused")
    device2 = tc.DeviceKey()
    again = dict(activate_body, device_public_key=device2.spki_der_b64(),
                 pin_block=tc.encrypt_pin_block(transport, tc.activation_plaintext(msisdn, activation_code, pin)))
    expect_error(lambda: post_json(public, "POST", "/v1/handset/activate", again, ()),
                 "re-activation with a used code")

    if args.steps == "activation":
        return

    # ------------------------------------------------------------ parties
    suffix = secrets.token_hex(3)
    merchant_id = args.merchant_id or f"Merkur.Trade.{suffix}@merchant.xbank"
    fsp_id = args.fsp_id or f"Demo.FSP.{suffix}@fsp.xbank"
    tc.validate_party_id(merchant_id, roles=("merchant",), allow_tel=False)
    tc.validate_party_id(fsp_id, roles=("fsp",), allow_tel=False)

    parties = {}
    for pid, kind in ((merchant_id, "merchant"), (fsp_id, "fsp")):
        step(f"operator registers {kind} {pid} by CSR: POST /v1/admin/parties")
        key, csr_pem = tc.make_csr(pid)
        try:
            _, _, res = operator.call("POST", "/v1/admin/parties",
                                      json_body={"party_id": pid, "kind": kind, "csr": csr_pem},
                                      expect=(201,))
        except tc.ApiError as exc:
            raise Failure(str(exc))
        check(res.get("party_id") == pid, f"party_id echoed ({res.get('party_id')!r})")
        check(res.get("kind") == kind, f"kind echoed ({res.get('kind')!r})")
        certs = tc.load_pem_certs(res["certificate"])
        cert = certs[0]
        check(spki(cert.public_key()) == spki(key.public_key()), "issued certificate carries our CSR key")
        check_chain(f"{kind} certificate", cert, certs[1:] + ca_served, anchors)
        key_path = write(os.path.join(workdir, f"{kind}.key"), tc.key_to_pem(key))
        os.chmod(key_path, 0o600)
        cert_path = write(os.path.join(workdir, f"{kind}.crt"), res["certificate"].encode("ascii"))
        parties[kind] = (key, cert, cert_path, key_path)

    m_key, m_cert, _, _ = parties["merchant"]
    f_key, f_cert, f_cert_path, f_key_path = parties["fsp"]
    fsp = tc.TmcsHttp(args.base, args.ca, f_cert_path, f_key_path, **kw)

    # ------------------------------------------------------------ the iMS
    step("merchant and FSP build and sign the iMS (M by merchant, F by FSP)")
    amount = tc.normalise_amount(args.amount)
    ims_type = args.type or tc.tier_for(amount)
    ims = tc.IMS(
        type=ims_type,
        ref="SCN-" + secrets.token_hex(8),
        from_id="tel:" + msisdn,
        to_id=merchant_id,
        timestamp=tc.utc_now_timestamp(),
        amount=amount,
        account_payable="1234-5678-9abc",
        account_receivable="9876-543-21de",
    ).normalised()
    ims.sign_merchant(m_key)
    ims.sign_fsp(f_key)
    M, F, C = ims.canonical_m(), ims.canonical_f(), ims.canonical_c()
    write(os.path.join(workdir, "M.bin"), M)
    write(os.path.join(workdir, "F.bin"), F)
    write(os.path.join(workdir, "C.bin"), C)
    check(tc.verify_sha256(m_cert, ims.to_sign, M), "to/sign verifies over M with the merchant certificate")
    check(tc.verify_sha256(f_cert, ims.fsp_sign, F), "FSPsign verifies over F with the FSP certificate")
    my_dtbs = tc.dtbs_sha256(C)
    xml = ims.to_xml()
    write(os.path.join(workdir, "ims.xml"), xml)
    info(f"type={ims.type} amount={ims.amount} ref={ims.ref} from={ims.from_id} to={ims.to_id} ts={ims.timestamp}")
    info(f"dtbs_sha256 (own) = {my_dtbs}")

    step("FSP submits: POST /v1/fsp/messages (mTLS, application/xml)")
    try:
        _, _, sub_res = fsp.call("POST", "/v1/fsp/messages", body=xml,
                                 content_type="application/xml", expect=(202,))
    except tc.ApiError as exc:
        raise Failure(str(exc))
    for k in ("request_id", "status", "expires_at", "verification_code", "status_url"):
        check(k in sub_res, f"response has `{k}`")
    check(sub_res["status"] == "pending_authorization", "status is pending_authorization")
    request_id = str(sub_res["request_id"])
    info(f"request_id={request_id} verification_code={sub_res['verification_code']} "
         f"expires_at={sub_res['expires_at']} status_url={sub_res['status_url']}")

    if not args.no_extra:
        step("FSP submits the same message again: expect 200 with the same request (idempotent)")
        try:
            _, _, again_res = fsp.call("POST", "/v1/fsp/messages", body=xml,
                                       content_type="application/xml", expect=(200,))
        except tc.ApiError as exc:
            raise Failure(str(exc))
        check(str(again_res.get("request_id")) == request_id, "same request_id")

    # ------------------------------------------------------------ handset
    if not args.no_extra:
        path = "/v1/handset/requests"
        step(f"handset lists pending requests: GET {path}")
        try:
            _, _, lst = public.call("GET", path, headers=device.headers("GET", public.full_path(path), msisdn))
        except tc.ApiError as exc:
            raise Failure(str(exc))
        ids = _collect_request_ids(lst)
        if ids is None:
            warn(f"list shape not specified by the contract and not recognised: {str(lst)[:200]}")
        else:
            check(request_id in ids, f"request {request_id} is among the {len(ids)} listed")

    path = f"/v1/handset/requests/{request_id}"
    step(f"handset reads the request: GET {path}")
    try:
        _, _, req = public.call("GET", path, headers=device.headers("GET", public.full_path(path), msisdn))
    except tc.ApiError as exc:
        raise Failure(str(exc))
    for k in ("request_id", "nonce", "dtbs_sha256", "expires_at", "verification_code", "display", "display_sig"):
        check(k in req, f"response has `{k}`")
    disp = req["display"] or {}
    info(f"display={disp}")
    check(str(req["request_id"]) == request_id, "request_id matches")
    check(req["dtbs_sha256"] == my_dtbs, "dtbs_sha256 equals our own base64url(SHA-256(C))")
    check(str(req["verification_code"]) == str(sub_res["verification_code"]),
          "verification_code equals the one the FSP got (shown at the POS)")
    disp_amount = tc.display_amount(disp)
    check(disp_amount == ims.amount, f"display amount {disp_amount!r} equals the iMS amount {ims.amount!r}")
    if disp.get("payee") != ims.to_id:
        warn(f"display.payee {disp.get('payee')!r} differs from to.id {ims.to_id!r} (allowed? contract silent)")
    dstr = tc.display_string_from_response(req)
    write(os.path.join(workdir, "display.txt"), dstr)
    if not tc.verify_display_sig(display_cert, req):
        alts = _display_alternatives(req, ims)
        hit = [name for name, s in alts if tc.verify_sha256(display_cert, req["display_sig"], s)]
        raise Failure("display_sig does not verify over the literal display string "
                      f"{dstr!r} with /pki/display.pem"
                      + (f"; it DOES verify under the alternative reading(s): {hit}" if hit else ""))
    ok("display_sig verifies with /pki/display.pem over:\n      " + dstr.decode().rstrip("\n").replace("\n", "\n      "))

    path = f"/v1/handset/requests/{request_id}/authorize"
    step(f"handset authorises with PIN: POST {path}")
    auth_body = {"pin_block": tc.encrypt_pin_block(
        transport, tc.auth_plaintext(request_id, str(req["nonce"]), req["dtbs_sha256"], pin))}
    try:
        _, _, auth = public.call("POST", path, json_body=auth_body,
                                 headers=device.headers("POST", public.full_path(path), msisdn))
    except tc.ApiError as exc:
        raise Failure(str(exc))
    check(auth.get("status") == "signed", "status is signed")
    check(str(auth.get("request_id")) == request_id, "request_id matches")
    sig_b64 = auth.get("signature")
    check(isinstance(sig_b64, str) and sig_b64 != "", "response has `signature`")
    try:
        sig = tc.b64d(sig_b64)
    except ValueError as exc:
        raise Failure(f"signature is not standard base64: {exc}")
    check(tc.verify_sha256(sub_cert, sig, C), "signature verifies over C with the subscriber certificate")

    if openssl_available():
        pub_path = write(os.path.join(workdir, "subscriber_pub.pem"), tc.public_key_pem(sub_cert))
        sig_path = write(os.path.join(workdir, "sig.der"), sig)
        c_path = os.path.join(workdir, "C.bin")
        cmd = ["openssl", "dgst", "-sha256", "-verify", pub_path, "-signature", sig_path, c_path]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise Failure(f"`{' '.join(cmd)}` failed: {r.stdout.strip()} {r.stderr.strip()}")
        ok(f"`openssl dgst -sha256 -verify subscriber_pub.pem -signature sig.der C.bin`: {r.stdout.strip()}")
    else:
        raise Failure("openssl not found on PATH (needed for the openssl dgst cross-check)")

    if not args.no_extra:
        step("the same authorisation again must be refused (a nonce works once)")
        auth_again = {"pin_block": tc.encrypt_pin_block(
            transport, tc.auth_plaintext(request_id, str(req["nonce"]), req["dtbs_sha256"], pin))}
        expect_error(lambda: public.call("POST", path, json_body=auth_again,
                                         headers=device.headers("POST", public.full_path(path), msisdn),
                                         expect=()),
                     "second authorisation")

    # ------------------------------------------------------------ FSP view
    path = f"/v1/fsp/requests/{request_id}"
    step(f"FSP fetches the signed iMS: GET {path}")
    res = None
    for attempt in range(10):
        try:
            _, _, res = fsp.call("GET", path)
        except tc.ApiError as exc:
            raise Failure(str(exc))
        if res.get("ims") or res.get("status") not in ("pending_authorization",):
            break
        time.sleep(0.5)
    info(f"status={res.get('status')}" + (f" error={res.get('error')}" if res.get("error") else ""))
    check(str(res.get("request_id")) == request_id, "request_id matches")
    check(res.get("status") in ("signed", "relayed", "settled"),
          f"status {res.get('status')!r} is signed/relayed/settled")
    check(isinstance(res.get("ims"), str) and res["ims"] != "", "response carries `ims`")
    signed_xml = res["ims"].encode("utf-8")
    write(os.path.join(workdir, "ims.signed.xml"), signed_xml)
    try:
        signed = tc.IMS.from_xml(signed_xml)
    except tc.ImsError as exc:
        raise Failure(f"returned iMS does not parse strictly: {exc}")
    check(signed.from_sign != "", "from/sign is filled")
    check(tc.b64d(signed.from_sign) == sig, "from/sign is the signature returned to the handset")
    check(signed.to_sign == ims.to_sign and signed.fsp_sign == ims.fsp_sign, "to/sign and FSPsign unchanged")
    check(signed.canonical_c() == C, "C recomputed from the returned iMS equals our C")
    check(tc.verify_sha256(sub_cert, signed.from_sign, signed.canonical_c()),
          "from/sign verifies over C with the subscriber certificate")
    check(tc.verify_sha256(m_cert, signed.to_sign, signed.canonical_m()), "to/sign verifies over M")
    check(tc.verify_sha256(f_cert, signed.fsp_sign, signed.canonical_f()), "FSPsign verifies over F")

    if not args.no_extra:
        step("another message with the same (to.id, ref) must be refused with 409 ims.replay")
        other = tc.IMS(**{**ims.__dict__, "account_payable": "1111-2222-3333",
                          "timestamp": tc.utc_now_timestamp(), "to_sign": "", "fsp_sign": ""})
        other.sign_merchant(m_key)
        other.sign_fsp(f_key)
        exc = expect_error(lambda: fsp.call("POST", "/v1/fsp/messages", body=other.to_xml(),
                                            content_type="application/xml", expect=()),
                           "replayed (to.id, ref)")
        check(exc.status == 409 and exc.code == "ims.replay", "HTTP 409 ims.replay")


def post_json(client: tc.TmcsHttp, method: str, path: str, body, expect):
    """JSON call without client certificate (handset activation)."""
    return client.call(method, path, json_body=body, expect=expect)


def _collect_request_ids(lst):
    """Request ids from `GET /v1/handset/requests` (shape unspecified)."""
    items = None
    if isinstance(lst, list):
        items = lst
    elif isinstance(lst, dict):
        for v in lst.values():
            if isinstance(v, list):
                items = v
                break
    if items is None:
        return None
    ids = []
    for it in items:
        if isinstance(it, dict) and "request_id" in it:
            ids.append(str(it["request_id"]))
        elif isinstance(it, str):
            ids.append(it)
    return ids


def _display_alternatives(req, ims):
    """Other plausible readings of the display string, for diagnostics only."""
    d = req.get("display") or {}
    base = dict(request_id=str(req["request_id"]), payee=str(d.get("payee", "")),
                verification_code=str(req["verification_code"]), dtbs=str(req["dtbs_sha256"]),
                expires_at=str(req["expires_at"]))
    alts = []
    for name, amount, payee in (
        ("amount=display.amount only", str(d.get("amount", "")), base["payee"]),
        ("amount=display.currency+display.amount", str(d.get("currency", "")) + str(d.get("amount", "")), base["payee"]),
        ("amount=iMS amount", ims.amount, base["payee"]),
        ("payee=to.id", ims.amount, ims.to_id),
    ):
        b = dict(base, amount=amount, payee=payee)
        alts.append((name, tc.display_string(**b)))
        alts.append((name + " (no trailing newline)", tc.display_string(**b)[:-1]))
    return alts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="tmcs end-to-end scenario (operator -> handset activation -> merchant/FSP -> "
                    "handset authorisation -> FSP), built only from CONTRACT.md v1.")
    p.add_argument("--base", required=True, help="server base URL, e.g. https://localhost:8443")
    p.add_argument("--ca", required=True, help="trust anchor file (the server's <data>/ca.pem)")
    p.add_argument("--operator-cert", required=True, help="operator client certificate (PEM)")
    p.add_argument("--operator-key", required=True, help="operator client key (PEM)")
    p.add_argument("--steps", choices=("activation", "full"), default="full",
                   help="activation: PKI + subscriber activation only; full (default): the whole flow")
    p.add_argument("--msisdn", help="subscriber MSISDN as +E.164 (default: random +49151xxxxxxxx)")
    p.add_argument("--activation-code",
                   help="use this activation code for an already registered --msisdn instead of registering one")
    p.add_argument("--pin", default="483920", help="PIN to set and use (default 483920)")
    p.add_argument("--amount", default="EUR25.00", help="iMS amount (default EUR25.00)")
    p.add_argument("--type", choices=("small", "medium", "large"),
                   help="iMS type (default: the tier of the amount under the default policy)")
    p.add_argument("--merchant-id", help="merchant party id (default Merkur.Trade.<random>@merchant.xbank)")
    p.add_argument("--fsp-id", help="FSP party id (default Demo.FSP.<random>@fsp.xbank)")
    p.add_argument("--no-extra", action="store_true",
                   help="skip the extra contract checks (idempotent resubmission, request list, "
                        "nonce reuse, ims.replay)")
    p.add_argument("--no-check-hostname", action="store_true",
                   help="verify the server chain against --ca but not its host name")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    p.add_argument("--workdir", help="where to keep keys, certificates, M/F/C, signatures (default: a temp dir)")
    args = p.parse_args(argv)
    if args.activation_code and not args.msisdn:
        p.error("--activation-code needs --msisdn")
    for opt in ("ca", "operator_cert", "operator_key"):
        if not os.path.isfile(getattr(args, opt)):
            p.error(f"--{opt.replace('_', '-')}: no such file: {getattr(args, opt)}")

    try:
        run(args)
    except Failure as exc:
        print(f"\nSCENARIO FAILED at {_current}: {exc}", file=sys.stderr)
        return 1
    except tc.ApiError as exc:
        print(f"\nSCENARIO FAILED at {_current}: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"\nSCENARIO FAILED at {_current}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("TMCS_SCENARIO_TRACE"):
            traceback.print_exc()
        return 1
    print("\nSCENARIO OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
