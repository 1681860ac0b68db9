//! The simulators' TLS: a server certificate, client certificates required
//! and verified by OpenSSL against `--ca`, and the client's subject CN and
//! extendedKeyUsage captured once per connection.

use std::any::Any;
use std::path::Path;

use actix_tls::accept::openssl::TlsStream;
use actix_web::dev::Extensions;
use actix_web::http::StatusCode;
use actix_web::rt::net::TcpStream;
use actix_web::HttpRequest;
use openssl::nid::Nid;
use openssl::ssl::SslVersion;
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509ExtendedKeyUsage, X509Name, X509StoreContext, X509};

use super::{Refusal, SimError};

/// The subject CN of the tmcs relay's client certificate (CONTRACT §11).
pub(crate) const RELAY_CN: &str = "tmcs-relay";

/// The client certificate of a connection, as far as the routes care.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The first subject CN, when there is one.
    pub cn: Option<String>,
    /// Whether extendedKeyUsage is present and names clientAuth.
    pub client_auth: bool,
}

/// The acceptor: TLS ≥ 1.2, the server certificate and key, and a client
/// certificate that must verify against `ca` (OpenSSL's chain check with
/// the `sslclient` purpose that a server applies by default).
pub(crate) fn acceptor(cert: &Path, key: &Path, ca: &Path) -> Result<SslAcceptorBuilder, SimError> {
    let setup =
        |what: String, e: openssl::error::ErrorStack| SimError::Setup(format!("TLS {what}: {e}"));
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| setup("context".into(), e))?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| setup("protocol".into(), e))?;
    b.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| setup(format!("key {}", key.display()), e))?;
    b.set_certificate_chain_file(cert)
        .map_err(|e| setup(format!("certificate {}", cert.display()), e))?;
    b.check_private_key()
        .map_err(|e| setup("key/certificate pair".into(), e))?;
    b.set_ca_file(ca)
        .map_err(|e| setup(format!("CA bundle {}", ca.display()), e))?;
    let names = X509Name::load_client_ca_file(ca)
        .map_err(|e| setup(format!("CA bundle {}", ca.display()), e))?;
    b.set_client_ca_list(names);
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    b.set_session_id_context(b"tmcs-sim")
        .map_err(|e| setup("session id context".into(), e))?;
    Ok(b)
}

/// `on_connect`: the verified client certificate's CN and clientAuth.
pub(crate) fn capture_peer(conn: &dyn Any, ext: &mut Extensions) {
    let Some(tls) = conn.downcast_ref::<TlsStream<TcpStream>>() else {
        return;
    };
    let Some(cert) = tls.ssl().peer_certificate() else {
        return;
    };
    let cn = cert
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok());
    let client_auth = cert
        .extended_key_usage()
        .is_some_and(|eku| eku.contains(X509ExtendedKeyUsage::SSL_CLIENT));
    ext.insert(Peer { cn, client_auth });
}

/// For the routes that tmcs calls: the client must be the relay (CN
/// `tmcs-relay`, extendedKeyUsage clientAuth), else `403`.
pub(crate) fn require_relay(req: &HttpRequest) -> Result<(), Refusal> {
    let ok = req
        .conn_data::<Peer>()
        .is_some_and(|p| p.client_auth && p.cn.as_deref() == Some(RELAY_CN));
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "the client certificate is not the tmcs relay's (subject CN tmcs-relay, extendedKeyUsage clientAuth)",
        ))
    }
}

/// The certificates of a PEM bundle as a trust store.
pub(crate) fn trust_store(ca: &Path) -> Result<X509Store, SimError> {
    let pem = std::fs::read(ca)
        .map_err(|e| SimError::Setup(format!("CA bundle {}: {e}", ca.display())))?;
    let certs = X509::stack_from_pem(&pem)
        .map_err(|e| SimError::Setup(format!("CA bundle {}: {e}", ca.display())))?;
    if certs.is_empty() {
        return Err(SimError::Setup(format!(
            "CA bundle {}: no certificate",
            ca.display()
        )));
    }
    let mut b = X509StoreBuilder::new().map_err(|e| SimError::Setup(format!("store: {e}")))?;
    for c in certs {
        b.add_cert(c)
            .map_err(|e| SimError::Setup(format!("CA bundle {}: {e}", ca.display())))?;
    }
    Ok(b.build())
}

/// Whether `cert` chains to `store` (OpenSSL's verification, now).
pub(crate) fn chains_to(cert: &X509, store: &X509Store) -> Result<(), String> {
    let chain = openssl::stack::Stack::new().map_err(|e| e.to_string())?;
    let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
    let mut why = String::new();
    let ok = ctx
        .init(store, cert, &chain, |c| {
            let ok = c.verify_cert()?;
            if !ok {
                why = c.error().error_string().to_string();
            }
            Ok(ok)
        })
        .map_err(|e| e.to_string())?;
    if ok {
        Ok(())
    } else {
        Err(why)
    }
}
