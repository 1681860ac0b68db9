"""A tiny in-process stand-in for the tmcs server, written from CONTRACT.md
only, so that scenario.py can be exercised without the real server.

It is NOT a reference implementation: it covers just the endpoints the
scenario uses, with the same (literal) reading of the contract as the
client.  A pass against it proves the scenario's plumbing, not the real
server's conformance.  Used by test_offline.py (ScenarioAgainstFakeTest).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import ipaddress

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import tmcs_client as tc

PEM = serialization.Encoding.PEM


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ku(**on):
    flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=False,
                 crl_sign=False, encipher_only=False, decipher_only=False)
    flags.update(on)
    return x509.KeyUsage(**flags)


class Problem(Exception):
    def __init__(self, status, code, detail=""):
        self.status, self.code, self.detail = status, code, detail


class FakeTmcs:
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.lock = threading.Lock()
        now = dt.datetime.now(dt.timezone.utc)
        self.root_k = ec.generate_private_key(ec.SECP256R1())
        self.root = self._cert(_name("Fake tmcs Root CA"), self.root_k.public_key(), _name("Fake tmcs Root CA"),
                               self.root_k, ca=True, ku=_ku(key_cert_sign=True, crl_sign=True))
        self.iss_k = ec.generate_private_key(ec.SECP256R1())
        self.iss = self._cert(_name("Fake tmcs Issuing CA"), self.iss_k.public_key(), self.root.subject,
                              self.root_k, ca=True, ku=_ku(key_cert_sign=True, crl_sign=True))
        self.transport_k = ec.generate_private_key(ec.SECP256R1())
        self.transport = self._issue(_name("tmcs transport"), self.transport_k.public_key(), _ku(key_agreement=True))
        self.display_k = ec.generate_private_key(ec.SECP256R1())
        self.display = self._issue(_name("tmcs display"), self.display_k.public_key(), _ku(digital_signature=True))
        self.tls_k = ec.generate_private_key(ec.SECP256R1())
        self.tls = self._issue(_name("localhost"), self.tls_k.public_key(), _ku(digital_signature=True),
                               san=x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               eku=[ExtendedKeyUsageOID.SERVER_AUTH])
        op_k = ec.generate_private_key(ec.SECP256R1())
        op = self._issue(_name("operator"), op_k.public_key(), _ku(digital_signature=True),
                         eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
        self.clients = {self._fp(op): ("operator", "operator")}
        self.ca_file = self._write("ca.pem", self.root.public_bytes(PEM) + self.iss.public_bytes(PEM))
        self.operator_cert = self._write("operator.crt", op.public_bytes(PEM))
        self.operator_key = self._write("operator.key", tc.key_to_pem(op_k))
        tls_cert = self._write("server.crt", self.tls.public_bytes(PEM) + self.iss.public_bytes(PEM))
        tls_key = self._write("server.key", tc.key_to_pem(self.tls_k))
        self.subscribers = {}
        self.parties = {}
        self.requests = {}
        self.by_body = {}
        self.by_ref = {}
        self.nonces_used = set()

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls_cert, tls_key)
        ctx.load_verify_locations(self.ca_file)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                fake._dispatch(self, "GET")

            def do_POST(self):
                fake._dispatch(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.base = f"https://localhost:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- lifecycle -------------------------------------------------------
    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- PKI ---------------------------------------------------------------
    def _write(self, name, data):
        p = os.path.join(self.workdir, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    @staticmethod
    def _fp(cert):
        return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def _cert(self, subject, pub, issuer, issuer_key, ca=False, ku=None, san=None, eku=None):
        now = dt.datetime.now(dt.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ku:
            b = b.add_extension(ku, critical=True)
        if san:
            b = b.add_extension(san, critical=False)
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def _issue(self, subject, pub, ku, san=None, eku=None):
        return self._cert(subject, pub, self.iss.subject, self.iss_k, ku=ku, san=san, eku=eku)

    def _decrypt_pin_block(self, b64):
        try:
            raw = base64.b64decode(b64, validate=True)
            E, N, CT = raw[:65], raw[65:77], raw[77:]
            eph = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), E)
            Z = self.transport_k.exchange(ec.ECDH(), eph)
            T = tc.ec_point_uncompressed(self.transport_k.public_key())
            K = HKDF(algorithm=hashes.SHA256(), length=32, salt=E + T, info=b"tmcs-pinblock-v1").derive(Z)
            return AESGCM(K).decrypt(N, CT, b"tmcs-pinblock-v1").decode("utf-8").split("|")
        except (ValueError, InvalidTag):
            raise Problem(400, "pinblock.malformed")

    # -- HTTP --------------------------------------------------------------
    def _dispatch(self, h, method):
        try:
            length = int(h.headers.get("Content-Length") or 0)
            body = h.rfile.read(length) if length else b""
            der = h.connection.getpeercert(binary_form=True)
            role = None
            if der:
                role = self.clients.get(hashlib.sha256(der).hexdigest())
            with self.lock:
                status, ctype, out = self._route(h, method, h.path, body, role)
        except Problem as p:
            status, ctype = p.status, "application/problem+json"
            out = json.dumps({"type": f"urn:tmcs:problem:{p.code}", "title": p.code, "status": p.status,
                              "code": p.code, "detail": p.detail}).encode()
        if isinstance(out, (dict, list)):
            out = json.dumps(out).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(out)))
        h.end_headers()
        h.wfile.write(out)

    def _need(self, role, want):
        if role is None:
            raise Problem(401, "auth.unauthenticated")
        if role[0] != want:
            raise Problem(403, "auth.forbidden")

    def _device(self, h, method, path):
        m = re.fullmatch(r'TMCS-Device msisdn="([^"]+)",ts="([0-9]+)",sig="([^"]+)"', h.headers.get("Authorization", ""))
        if not m:
            raise Problem(401, "auth.device")
        msisdn, ts, sig = m.groups()
        sub = self.subscribers.get(msisdn)
        if not sub or not sub.get("device"):
            raise Problem(401, "auth.device")
        if abs(int(ts) - time.time()) > 300:
            raise Problem(401, "auth.device")
        msg = f"tmcs-dev-v1\n{method}\n{path.split('?')[0]}\n{msisdn}\n{ts}\n".encode()
        try:
            sub["device"].verify(base64.b64decode(sig), msg, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Problem(401, "auth.device")
        return msisdn, sub

    def _route(self, h, method, path, body, role):
        J = "application/json"
        if method == "GET" and path == "/pki/ca.pem":
            return 200, "application/x-pem-file", self.root.public_bytes(PEM) + self.iss.public_bytes(PEM)
        if method == "GET" and path == "/pki/transport.pem":
            return 200, "application/x-pem-file", self.transport.public_bytes(PEM)
        if method == "GET" and path == "/pki/display.pem":
            return 200, "application/x-pem-file", self.display.public_bytes(PEM)

        if method == "POST" and path == "/v1/admin/subscribers":
            self._need(role, "operator")
            req = json.loads(body)
            if req["msisdn"] in self.subscribers and self.subscribers[req["msisdn"]]["status"] == "active":
                raise Problem(409, "subscriber.active")
            code = secrets.token_hex(4).upper()
            self.subscribers[req["msisdn"]] = {"status": "pending", "code": code, "attempts": 3}
            return 201, J, {"subscriber_id": "sub-" + secrets.token_hex(4), "activation_code": code,
                            "activation_expires_at": "2099-01-01T00:00:00Z"}

        if method == "POST" and path == "/v1/handset/activate":
            req = json.loads(body)
            sub = self.subscribers.get(req["msisdn"])
            if not sub:
                raise Problem(404, "subscriber.not_found")
            parts = self._decrypt_pin_block(req["pin_block"])
            if (sub["status"] != "pending" or parts[:3] != ["v1", "activate", req["msisdn"]]
                    or parts[3] != sub["code"] or req["activation_code"] != sub["code"]):
                sub["attempts"] -= 1
                raise Problem(400, "activation.bad_code", f"{sub['attempts']} attempts left")
            sub["device"] = serialization.load_der_public_key(base64.b64decode(req["device_public_key"]))
            sub["pin"] = parts[4]
            sub["key"] = ec.generate_private_key(ec.SECP256R1())
            sub["cert"] = self._issue(_name(req["msisdn"]), sub["key"].public_key(),
                                      _ku(digital_signature=True, content_commitment=True))
            sub["status"] = "active"
            return 200, J, {"certificate": sub["cert"].public_bytes(PEM).decode(),
                            "chain": self.iss.public_bytes(PEM).decode()}

        if method == "POST" and path == "/v1/admin/parties":
            self._need(role, "operator")
            req = json.loads(body)
            csr = x509.load_pem_x509_csr(req["csr"].encode())
            if not csr.is_signature_valid:
                raise Problem(400, "csr.bad_signature")
            cert = self._issue(_name(req["party_id"]), csr.public_key(), _ku(digital_signature=True),
                               eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
            self.parties[req["party_id"]] = {"kind": req["kind"], "cert": cert}
            if req["kind"] in ("fsp", "gateway"):
                self.clients[self._fp(cert)] = (req["kind"], req["party_id"])
            return 201, J, {"party_id": req["party_id"], "kind": req["kind"],
                            "certificate": cert.public_bytes(PEM).decode()}

        if method == "POST" and path == "/v1/fsp/messages":
            self._need(role, "fsp")
            key = hashlib.sha256(body).hexdigest()
            if key in self.by_body:
                return 200, J, self._fsp_submit_view(self.by_body[key])
            try:
                ims = tc.IMS.from_xml(body).normalised()
            except tc.ImsError as e:
                raise Problem(400, "ims.malformed", str(e))
            merchant = self.parties.get(ims.to_id)
            if not merchant or not tc.verify_sha256(merchant["cert"], ims.to_sign, ims.canonical_m()):
                raise Problem(400, "ims.bad_signature")
            if not tc.verify_sha256(self.parties[role[1]]["cert"], ims.fsp_sign, ims.canonical_f()):
                raise Problem(400, "ims.bad_signature")
            if tc.tier_for(ims.amount) != ims.type:
                raise Problem(400, "ims.tier_mismatch")
            if (ims.to_id, ims.ref) in self.by_ref:
                raise Problem(409, "ims.replay")
            msisdn = ims.from_id[4:]
            if msisdn not in self.subscribers or self.subscribers[msisdn]["status"] != "active":
                raise Problem(404, "subscriber.not_found")
            rid = secrets.token_hex(8)
            r = {"request_id": rid, "ims": ims, "msisdn": msisdn, "nonce": secrets.token_urlsafe(12),
                 "vc": f"{secrets.randbelow(10000):04d}", "status": "pending_authorization",
                 "expires_at": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=120))
                 .strftime("%Y-%m-%dT%H:%M:%SZ")}
            self.requests[rid] = r
            self.by_body[key] = rid
            self.by_ref[(ims.to_id, ims.ref)] = rid
            return 202, J, self._fsp_submit_view(rid)

        m = re.fullmatch(r"/v1/fsp/requests/([0-9a-f]+)", path)
        if method == "GET" and m:
            self._need(role, "fsp")
            r = self.requests.get(m.group(1)) or {}
            if not r:
                raise Problem(404, "request.not_found")
            out = {"request_id": r["request_id"], "status": r["status"]}
            if r["status"] == "signed":
                out["ims"] = r["ims"].to_xml().decode()
            return 200, J, out

        if method == "GET" and path == "/v1/handset/requests":
            msisdn, _ = self._device(h, method, path)
            return 200, J, {"requests": [{"request_id": r["request_id"]} for r in self.requests.values()
                                         if r["msisdn"] == msisdn and r["status"] == "pending_authorization"]}

        m = re.fullmatch(r"/v1/handset/requests/([0-9a-f]+)", path)
        if method == "GET" and m:
            msisdn, _ = self._device(h, method, path)
            r = self.requests.get(m.group(1))
            if not r or r["msisdn"] != msisdn:
                raise Problem(404, "request.not_found")
            ims = r["ims"]
            cur, minor = tc.parse_amount(ims.amount)
            out = {"request_id": r["request_id"], "nonce": r["nonce"], "dtbs_sha256": ims.dtbs_sha256(),
                   "expires_at": r["expires_at"], "verification_code": r["vc"],
                   "display": {"payee": ims.to_id, "amount": ims.amount[3:], "currency": cur,
                               "text": f"Pay {ims.amount} to {ims.to_id}"}}
            ds = tc.display_string(r["request_id"], ims.to_id, ims.amount, r["vc"], ims.dtbs_sha256(),
                                   r["expires_at"])
            out["display_sig"] = tc.b64(self.display_k.sign(ds, ec.ECDSA(hashes.SHA256())))
            return 200, J, out

        m = re.fullmatch(r"/v1/handset/requests/([0-9a-f]+)/authorize", path)
        if method == "POST" and m:
            msisdn, sub = self._device(h, method, path)
            r = self.requests.get(m.group(1))
            if not r or r["msisdn"] != msisdn:
                raise Problem(404, "request.not_found")
            if r["status"] != "pending_authorization":
                raise Problem(409, "request.not_pending")
            parts = self._decrypt_pin_block(json.loads(body)["pin_block"])
            ims = r["ims"]
            if (len(parts) != 6 or parts[:5] != ["v1", "auth", r["request_id"], r["nonce"], ims.dtbs_sha256()]
                    or r["nonce"] in self.nonces_used):
                raise Problem(400, "sad.mismatch")
            if parts[5] != sub["pin"]:
                raise Problem(403, "pin.wrong")
            self.nonces_used.add(r["nonce"])
            sig = sub["key"].sign(ims.canonical_c(), ec.ECDSA(hashes.SHA256()))
            ims.from_sign = tc.b64(sig)
            r["status"] = "signed"
            return 200, J, {"status": "signed", "request_id": r["request_id"], "signature": tc.b64(sig)}

        raise Problem(404, "not_found", path)

    def _fsp_submit_view(self, rid):
        r = self.requests[rid]
        return {"request_id": rid, "status": r["status"], "expires_at": r["expires_at"],
                "verification_code": r["vc"], "status_url": f"/v1/fsp/requests/{rid}"}
