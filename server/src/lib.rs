//! What the `tmcs` executable adds to the service library: the HTTPS
//! transport of the relay (CONTRACT §11).
//!
//! * mTLS with the relay certificate `tmcs init` issues
//!   (`<data>/relay/client.crt`, CN `tmcs-relay`, clientAuth);
//! * the receiver's certificate must chain to `relay.ca_file` (default
//!   `<data>/ca.pem`) and name the callback URL's host;
//! * one pooled client (keep-alive) per node; a connect timeout and a
//!   whole-request timeout of `relay.timeout_seconds`.

use std::rc::Rc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use tmcs::config::Config;
use tmcs::relay::{Answer, Method, Outgoing, Transport, TransportError};

/// The longest answer body read (a pain.002 is a few KiB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The relay's HTTPS client.
pub struct HttpsTransport {
    client: awc::Client,
}

impl std::fmt::Debug for HttpsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpsTransport")
    }
}

impl HttpsTransport {
    /// Builds the client (inside an actix/tokio runtime).
    pub fn new(cfg: &Config) -> Result<HttpsTransport, String> {
        let what = |p: &std::path::Path| {
            let p = p.display().to_string();
            move |e: openssl::error::ErrorStack| format!("relay TLS: {p}: {e}")
        };
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        b.set_ca_file(&cfg.relay_ca).map_err(what(&cfg.relay_ca))?;
        b.set_verify(SslVerifyMode::PEER);
        b.set_certificate_chain_file(&cfg.relay_cert)
            .map_err(what(&cfg.relay_cert))?;
        b.set_private_key_file(&cfg.relay_key, SslFiletype::PEM)
            .map_err(what(&cfg.relay_key))?;
        b.check_private_key().map_err(what(&cfg.relay_key))?;
        let r = &cfg.file.relay;
        let timeout = Duration::from_secs(r.timeout_seconds.max(1));
        let client = awc::Client::builder()
            .connector(
                awc::Connector::new()
                    .openssl(b.build())
                    .timeout(timeout.min(Duration::from_secs(5)))
                    .conn_keep_alive(Duration::from_secs(30))
                    .limit(r.per_target_concurrency.max(1) * 64),
            )
            .timeout(timeout)
            .disable_redirects()
            .finish();
        Ok(HttpsTransport { client })
    }
}

impl Transport for HttpsTransport {
    fn send<'a>(&'a self, out: &'a Outgoing) -> LocalBoxFuture<'a, Result<Answer, TransportError>> {
        Box::pin(async move {
            let method = match out.method {
                Method::Post => awc::http::Method::POST,
                Method::Delete => awc::http::Method::DELETE,
            };
            let mut req = self
                .client
                .request(method, &out.url)
                .timeout(out.timeout)
                .insert_header(("content-type", out.content_type.as_str()))
                .insert_header(("idempotency-key", out.idempotency_key.as_str()))
                .insert_header(("tmcs-event", out.event.as_str()));
            for (k, v) in &out.headers {
                req = req.insert_header((k.as_str(), v.as_str()));
            }
            let mut res = req
                .send_body(out.body.to_vec())
                .await
                .map_err(|e| match e {
                    awc::error::SendRequestError::Timeout => TransportError::Timeout,
                    awc::error::SendRequestError::Connect(e) => {
                        TransportError::Unreachable(e.to_string())
                    }
                    other => TransportError::Other(other.to_string()),
                })?;
            let status = res.status().as_u16();
            let body = res
                .body()
                .limit(MAX_ANSWER_BYTES)
                .await
                .map_err(|e| TransportError::Other(format!("reading the answer: {e}")))?;
            Ok(Answer {
                status,
                body: body.to_vec(),
            })
        })
    }
}

/// The factory `tmcs serve` calls (on its actix system).
pub fn relay_transport(cfg: &Config) -> Result<Rc<dyn Transport>, String> {
    Ok(Rc::new(HttpsTransport::new(cfg)?))
}
