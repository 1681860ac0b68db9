//! A small HTTP/1.1 load generator: N connections, each sending one request
//! after another (keep-alive when the server keeps the connection, a new
//! connection when it closes it), for a fixed time. Plain TCP, or TLS with
//! a client certificate (mTLS). The same client drives tmcs and its
//! baselines, so their figures compare.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use openssl::ssl::SslConnector;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// One request to send: method, path, content type and body.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: &'static str,
    pub path: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Req {
    fn bytes(&self, host: &str) -> Vec<u8> {
        let mut v = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            self.method,
            self.path,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        v.extend_from_slice(&self.body);
        v
    }
}

/// What a run measured.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latencies of the answered requests, ms, sorted.
    pub latencies_ms: Vec<f64>,
    pub reconnects: u64,
}

impl Report {
    pub fn per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn percentile(&self, p: f64) -> f64 {
        crate::bench::percentile(&self.latencies_ms, p)
    }
}

/// One answer: status, whether the server keeps the connection, the body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut S,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, bool, Vec<u8>)> {
    conn.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    };
    let head =
        String::from_utf8_lossy(buf.get(..head_end).unwrap_or_default()).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let keep = !head
        .lines()
        .any(|l| l.starts_with("connection:") && l.contains("close"))
        && head.starts_with("http/1.1");
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let body = buf
        .get(head_end..head_end + length)
        .unwrap_or_default()
        .to_vec();
    Ok((status, keep, body))
}

/// Sends `requests` round-robin over `connections` connections for
/// `duration`; `check` judges each answer's body (status 200).
pub async fn run(
    addr: SocketAddr,
    requests: &[Req],
    connections: usize,
    duration: Duration,
    check: fn(&[u8]) -> bool,
) -> Report {
    run_load(
        addr,
        requests,
        &Load {
            connections,
            duration,
            status: 200,
            check,
            each_once: false,
            tls: None,
        },
    )
    .await
}

/// How [`run_load`] sends.
#[derive(Clone)]
pub struct Load {
    pub connections: usize,
    /// The timed phase (shorter when `each_once` runs out of requests).
    pub duration: Duration,
    /// The answer's status that counts as success.
    pub status: u16,
    /// Judges a successful answer's body.
    pub check: fn(&[u8]) -> bool,
    /// Every request is sent once, in order, by whichever connection is
    /// free (messages that must not repeat); otherwise round-robin.
    pub each_once: bool,
    /// TLS with this connector (its client certificate, if any) and this
    /// server name.
    pub tls: Option<(SslConnector, String)>,
}

type Connecting<S> = Pin<Box<dyn Future<Output = std::io::Result<S>>>>;

/// Sends `requests` as `load` says; the report's time ends with the last
/// answer.
pub async fn run_load(addr: SocketAddr, requests: &[Req], load: &Load) -> Report {
    let host = addr.to_string();
    let wire: Rc<Vec<Vec<u8>>> = Rc::new(requests.iter().map(|r| r.bytes(&host)).collect());
    match load.tls.clone() {
        None => {
            drive(wire, load, move || -> Connecting<TcpStream> {
                Box::pin(tcp(addr))
            })
            .await
        }
        Some((connector, name)) => {
            drive(wire, load, move || -> Connecting<SslStream<TcpStream>> {
                let (connector, name) = (connector.clone(), name.clone());
                Box::pin(async move {
                    let ssl = connector
                        .configure()
                        .and_then(|c| c.into_ssl(&name))
                        .map_err(std::io::Error::other)?;
                    let mut s =
                        SslStream::new(ssl, tcp(addr).await?).map_err(std::io::Error::other)?;
                    Pin::new(&mut s)
                        .connect()
                        .await
                        .map_err(std::io::Error::other)?;
                    Ok(s)
                })
            })
            .await
        }
    }
}

async fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

async fn drive<S, C>(wire: Rc<Vec<Vec<u8>>>, load: &Load, connect: C) -> Report
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    C: Fn() -> Connecting<S> + Clone + 'static,
{
    let start = Instant::now();
    let deadline = start + load.duration;
    let next = Rc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..load.connections {
        let (wire, next, connect) = (wire.clone(), next.clone(), connect.clone());
        let (status, check, each_once) = (load.status, load.check, load.each_once);
        tasks.push(tokio::task::spawn_local(async move {
            let mut r = Report::default();
            let mut conn: Option<S> = None;
            let mut buf = Vec::with_capacity(16 * 1024);
            let mut i = c;
            while Instant::now() < deadline {
                let n = if each_once {
                    next.fetch_add(1, Ordering::Relaxed)
                } else {
                    i
                };
                let Some(req) = wire
                    .get(n % wire.len())
                    .filter(|_| !each_once || n < wire.len())
                else {
                    break;
                };
                i += 1;
                if conn.is_none() {
                    match connect().await {
                        Ok(s) => {
                            conn = Some(s);
                            r.reconnects += 1;
                        }
                        Err(_) => {
                            r.errors += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    }
                }
                let Some(s) = conn.as_mut() else { continue };
                let t0 = Instant::now();
                match exchange(s, req, &mut buf).await {
                    Ok((st, keep, body)) if st == status && check(&body) => {
                        r.ok += 1;
                        r.latencies_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                        if !keep {
                            conn = None;
                        }
                    }
                    _ => {
                        r.errors += 1;
                        conn = None;
                    }
                }
            }
            r
        }));
    }
    let mut total = Report::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.ok += r.ok;
            total.errors += r.errors;
            total.reconnects += r.reconnects;
            total.latencies_ms.extend(r.latencies_ms);
        }
    }
    total.seconds = start.elapsed().as_secs_f64();
    total.latencies_ms.sort_by(f64::total_cmp);
    total
}

/// Sends `req` until one answer passes `check` (a server still starting).
pub async fn wait_until_serving(addr: SocketAddr, req: &Req, check: fn(&[u8]) -> bool) -> bool {
    let wire = req.bytes(&addr.to_string());
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let mut buf = Vec::new();
            if let Ok((200, _, body)) = exchange(&mut s, &wire, &mut buf).await {
                if check(&body) {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
