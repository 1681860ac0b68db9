//! An HTTPS client for tmcs (used by `tmcs demo`, the benchmark and the
//! integration tests): trusts `ca.pem`, optionally presents a client
//! certificate.

use std::path::Path;
use std::time::Duration;

use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::X509;

fn builder(ca_pem: &Path) -> Result<SslConnectorBuilder, openssl::error::ErrorStack> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_ca_file(ca_pem)?;
    b.set_verify(SslVerifyMode::PEER);
    Ok(b)
}

fn finish(b: SslConnectorBuilder) -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .openssl(b.build())
                .timeout(Duration::from_secs(10))
                .limit(256),
        )
        .timeout(Duration::from_secs(60))
        .finish()
}

/// Builds an `awc` client. Must be called inside an actix/tokio runtime.
pub fn https_client(
    ca_pem: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<awc::Client, openssl::error::ErrorStack> {
    let mut b = builder(ca_pem)?;
    if let Some((cert, key)) = identity {
        b.set_certificate_chain_file(cert)?;
        b.set_private_key_file(key, SslFiletype::PEM)?;
        b.check_private_key()?;
    }
    Ok(finish(b))
}

/// Same, with the client identity given as PEM strings (leaf first).
pub fn https_client_pem(
    ca_pem: &Path,
    cert_pem: &str,
    key_pem: &str,
) -> Result<awc::Client, openssl::error::ErrorStack> {
    Ok(finish(identity_pem(ca_pem, cert_pem, key_pem)?))
}

/// The TLS settings of [`https_client_pem`] as an OpenSSL connector, for
/// callers that speak HTTP themselves (the benchmark's load generator).
pub fn connector_pem(
    ca_pem: &Path,
    cert_pem: &str,
    key_pem: &str,
) -> Result<SslConnector, openssl::error::ErrorStack> {
    Ok(identity_pem(ca_pem, cert_pem, key_pem)?.build())
}

fn identity_pem(
    ca_pem: &Path,
    cert_pem: &str,
    key_pem: &str,
) -> Result<SslConnectorBuilder, openssl::error::ErrorStack> {
    let mut b = builder(ca_pem)?;
    let mut chain = X509::stack_from_pem(cert_pem.as_bytes())?.into_iter();
    if let Some(leaf) = chain.next() {
        b.set_certificate(&leaf)?;
    }
    for extra in chain {
        b.add_extra_chain_cert(extra)?;
    }
    let key = PKey::private_key_from_pem(key_pem.as_bytes())?;
    b.set_private_key(&key)?;
    b.check_private_key()?;
    Ok(b)
}
