//! TLS: the server certificate from `<data>/tls/`, optional client
//! certificates, and the peer certificate captured once per connection.

use std::any::Any;
use std::path::Path;

use actix_tls::accept::openssl::TlsStream;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use openssl::hash::MessageDigest;
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslMethod, SslVerifyMode, SslVersion};

use crate::app::AppError;
use crate::pki::cert::asn1_to_time;

/// The client certificate of a connection. Its fingerprint is what the
/// registry maps to a role; the chain is not consulted (pinning).
#[derive(Debug, Clone)]
pub struct PeerCert {
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
    /// Validity period, unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

pub fn acceptor(cert: &Path, key: &Path) -> Result<SslAcceptorBuilder, AppError> {
    let setup = |what: &str, e: openssl::error::ErrorStack| {
        AppError::Setup(format!("TLS {what}: {e} (run `tmcs init`?)"))
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| setup("context", e))?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| setup("protocol", e))?;
    b.set_private_key_file(key, openssl::ssl::SslFiletype::PEM)
        .map_err(|e| setup(&format!("key {}", key.display()), e))?;
    b.set_certificate_chain_file(cert)
        .map_err(|e| setup(&format!("certificate {}", cert.display()), e))?;
    b.check_private_key()
        .map_err(|e| setup("key/certificate pair", e))?;
    // Ask for a client certificate, accept any: the handshake still proves
    // possession of its key, and the role comes from the registered fingerprint.
    b.set_verify_callback(SslVerifyMode::PEER, |_preverified, _ctx| true);
    b.set_session_id_context(b"tmcs")
        .map_err(|e| setup("session id context", e))?;
    Ok(b)
}

/// The client's address of a TLS or plain TCP connection.
pub fn peer_ip(conn: &dyn Any) -> Option<std::net::IpAddr> {
    let tcp = match conn.downcast_ref::<TlsStream<TcpStream>>() {
        Some(tls) => tls.get_ref(),
        None => conn.downcast_ref::<TcpStream>()?,
    };
    tcp.peer_addr().ok().map(|a| a.ip())
}

pub fn capture_peer_certificate(conn: &dyn Any, ext: &mut Extensions) {
    let Some(tls) = conn.downcast_ref::<TlsStream<TcpStream>>() else {
        return;
    };
    let Some(cert) = tls.ssl().peer_certificate() else {
        return;
    };
    let Ok(digest) = cert.digest(MessageDigest::sha256()) else {
        return;
    };
    let (Ok(not_before), Ok(not_after)) = (
        asn1_to_time(cert.not_before()),
        asn1_to_time(cert.not_after()),
    ) else {
        return;
    };
    ext.insert(PeerCert {
        fingerprint: hex::encode(digest),
        not_before: not_before.unix_timestamp(),
        not_after: not_after.unix_timestamp(),
    });
}
