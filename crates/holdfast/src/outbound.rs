//! Requests to URLs Holdfast did not take from the routes file (webhook deliveries), and the
//! policy that keeps them off internal addresses (docs/webhooks.md#the-outbound-policy). The
//! origin clients connect to `untrusted` route targets through the same [`Guarded`] connector.
//!
//! A request's host is resolved first, every address it resolves to is checked against
//! [`Policy`], and the connection goes to one of the checked addresses itself, never to the
//! name again: a DNS answer that changes between the check and the connect (rebinding) cannot
//! slip an internal address through. An IP literal in the URL is checked the same way.
//! Redirects are never followed (a `3xx` is the request's outcome), the response body is read
//! up to `outbound.max_response_size`, and the whole request is bounded by
//! `outbound.timeout_secs`. Connections are kept alive and reused per host; a pooled
//! connection was checked when it was made.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::config::outbound::{Net, OutboundConfig};
use crate::metrics::Page;

/// Why an address may not be reached unless allow-listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), 100.64/10 (shared address space), IPv6 ULA
    /// (fc00::/7) and site-local (fec0::/10).
    Private,
    /// 169.254/16 (the cloud metadata address 169.254.169.254 among them), fe80::/10.
    LinkLocal,
    /// 224/4, 255.255.255.255, ff00::/8.
    Multicast,
    /// 0.0.0.0/8, ::.
    Unspecified,
}

impl Class {
    const ALL: [Class; 5] = [
        Class::Loopback,
        Class::Private,
        Class::LinkLocal,
        Class::Multicast,
        Class::Unspecified,
    ];

    /// The metric label and the word in error messages.
    pub fn label(self) -> &'static str {
        match self {
            Class::Loopback => "loopback",
            Class::Private => "private",
            Class::LinkLocal => "link_local",
            Class::Multicast => "multicast",
            Class::Unspecified => "unspecified",
        }
    }

    /// The class of `ip`, or `None` for an address anyone may reach. IPv4-mapped
    /// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`)
    /// addresses are judged by the IPv4 address they carry.
    pub fn of(ip: IpAddr) -> Option<Class> {
        match ip {
            IpAddr::V4(v4) => Class::of_v4(v4),
            IpAddr::V6(v6) => match embedded_v4(v6) {
                Some(v4) => Class::of_v4(v4),
                None => Class::of_v6(v6),
            },
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Option<Class> {
        let [a, b, ..] = ip.octets();
        if ip.is_loopback() {
            Some(Class::Loopback)
        } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
            Some(Class::Private)
        } else if ip.is_link_local() {
            Some(Class::LinkLocal)
        } else if ip.is_multicast() || ip.is_broadcast() {
            Some(Class::Multicast)
        } else if a == 0 {
            Some(Class::Unspecified)
        } else {
            None
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Option<Class> {
        let first = ip.segments()[0];
        if ip.is_loopback() {
            Some(Class::Loopback)
        } else if ip.is_unspecified() {
            Some(Class::Unspecified)
        } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
            Some(Class::Private)
        } else if first & 0xffc0 == 0xfe80 {
            Some(Class::LinkLocal)
        } else if ip.is_multicast() {
            Some(Class::Multicast)
        } else {
            None
        }
    }
}

/// The IPv4 address an IPv6 address stands for: mapped, compatible (not `::` or `::1`) or the
/// well-known NAT64 prefix.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    None
}

/// Which addresses outbound requests may reach: every address outside the [`Class`]es, and
/// those inside them that an `outbound.allow` network holds.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Vec<Net>,
}

impl Policy {
    /// A policy that also lets `allow` through.
    pub fn new(allow: Vec<Net>) -> Policy {
        Policy { allow }
    }

    /// `Ok` when `ip` may be reached, else the class that forbids it. An allow-listed
    /// address is allowed in any of its forms: `127.0.0.0/8` allows `::ffff:127.0.0.1` too.
    pub fn check(&self, ip: IpAddr) -> Result<(), Class> {
        let Some(class) = Class::of(ip) else {
            return Ok(());
        };
        let v4 = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = |ip: IpAddr| self.allow.iter().any(|net| net.contains(ip));
        if allowed(ip) || v4.is_some_and(allowed) {
            Ok(())
        } else {
            Err(class)
        }
    }
}

/// A request the policy refused: no address of the host may be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{host} resolves to {addr}, a {} address, which outbound.allow does not list", .class.label())]
pub struct Refused {
    /// The host as the URL names it.
    pub host: String,
    /// The first address that was refused.
    pub addr: IpAddr,
    /// Why.
    pub class: Class,
}

/// How a refusal starts when it is told to a client.
pub const REFUSED: &str = "refused by the outbound policy";

impl Refused {
    /// The refusal without the host's addresses: what a client may be told.
    pub fn brief(&self) -> String {
        let class = self.class.label().replace('_', "-");
        let article = if class.starts_with('u') { "an" } else { "a" };
        format!("{REFUSED}: {article} {class} address, which outbound.allow does not list")
    }
}

/// Why an outbound request failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The policy refused every address of the host.
    #[error("refused by the outbound policy: {0}")]
    Refused(Refused),
    /// No connection could be made or the exchange broke off.
    #[error("{0}")]
    Failed(String),
    /// `outbound.timeout_secs` passed.
    #[error("no complete response within outbound.timeout_secs ({0} s)")]
    Timeout(u64),
    /// The response body was longer than `outbound.max_response_size`.
    #[error("the response body exceeds outbound.max_response_size ({0} bytes)")]
    TooLarge(usize),
}

/// A response, its body read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status; a `3xx` is not followed.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, at most `outbound.max_response_size` bytes.
    pub body: Bytes,
}

/// Refusals by [`Class`], shared by every client that applies the policy, for
/// `holdfast_outbound_refused_total`.
#[derive(Clone, Default)]
pub struct Refusals(Arc<[AtomicU64; 5]>);

impl Refusals {
    fn count(&self, class: Class) {
        let at = Class::ALL.iter().position(|c| *c == class);
        self.0[at.unwrap_or(0)].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the refusals by class to `page`.
    pub fn metrics(&self, page: &mut Page) {
        let counts = (Class::ALL.iter().zip(self.0.iter()))
            .map(|(c, n)| {
                (
                    vec![("class", c.label().to_string())],
                    n.load(Ordering::Relaxed),
                )
            })
            .collect();
        page.counters(
            "holdfast_outbound_refused_total",
            "Outbound connections (webhook deliveries, untrusted route targets) refused by the outbound policy, by the class of the address",
            counts,
        );
    }
}

/// A connector that resolves, checks each address against the policy, and connects to a
/// checked address.
#[derive(Clone)]
pub struct Guarded {
    policy: Arc<Policy>,
    connect_timeout: Duration,
    /// The setting `connect_timeout` comes from, for the error.
    timeout_setting: &'static str,
    refused: Refusals,
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl tower_service::Service<Uri> for Guarded {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await })
    }
}

impl Guarded {
    /// A connector that lets through what `policy` allows, gives each address
    /// `connect_timeout` (from the setting `timeout_setting`), and counts refusals in `refused`.
    pub fn new(
        policy: Policy,
        connect_timeout: Duration,
        timeout_setting: &'static str,
        refused: Refusals,
    ) -> Guarded {
        Guarded {
            policy: Arc::new(policy),
            connect_timeout,
            timeout_setting,
            refused,
        }
    }

    async fn connect(self, uri: Uri) -> Result<TokioIo<TcpStream>, BoxError> {
        let host = uri.host().ok_or("the URL has no host")?;
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| format!("cannot resolve {bare}: {e}"))?
                .collect(),
        };
        let mut refused = None;
        let mut checked = Vec::new();
        for addr in addrs {
            match self.policy.check(addr.ip()) {
                Ok(()) => checked.push(addr),
                Err(class) => {
                    refused.get_or_insert(Refused {
                        host: bare.to_string(),
                        addr: addr.ip(),
                        class,
                    });
                }
            }
        }
        if checked.is_empty() {
            let refused = refused.ok_or_else(|| format!("{bare} resolves to no address"))?;
            self.refused.count(refused.class);
            return Err(Box::new(refused));
        }
        let mut last = None;
        for addr in checked {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(TokioIo::new(stream));
                }
                Ok(Err(e)) => last = Some(format!("cannot connect to {addr}: {e}")),
                Err(_) => {
                    last = Some(format!(
                        "cannot connect to {addr} within {}",
                        self.timeout_setting
                    ))
                }
            }
        }
        Err(last.unwrap_or_default().into())
    }
}

/// The client every outbound request goes through: one keep-alive pool, one policy.
#[derive(Clone)]
pub struct Outbound {
    client: Client<HttpsConnector<Guarded>, Full<Bytes>>,
    refused: Refusals,
    max_response_size: usize,
    timeout: Duration,
}

impl Outbound {
    /// A client with `config`'s policy and limits; TLS is checked against the system's roots.
    /// `config` was validated, so its allow list parses. Refusals are counted in `refused`.
    pub fn new(config: &OutboundConfig, refused: Refusals) -> Outbound {
        let guarded = Guarded::new(
            Policy::new(config.allow_nets().unwrap_or_default()),
            config.connect_timeout(),
            "outbound.connect_timeout_secs",
            refused.clone(),
        );
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(guarded);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(config.idle_per_host)
            .build(https);
        Outbound {
            client,
            refused,
            max_response_size: config.max_response_size,
            timeout: config.timeout(),
        }
    }

    /// Sends `req` and reads its response, within the time and size limits.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Reply, OutboundError> {
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| match find::<Refused>(&e) {
                    Some(refused) => OutboundError::Refused(refused.clone()),
                    None => OutboundError::Failed(crate::http::error_chain(&e)),
                })?;
            let (head, body) = resp.into_parts();
            let body = Limited::new(body, self.max_response_size)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        OutboundError::TooLarge(self.max_response_size)
                    } else {
                        OutboundError::Failed(format!("the response body broke off: {e}"))
                    }
                })?
                .to_bytes();
            Ok(Reply {
                status: head.status,
                headers: head.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| OutboundError::Timeout(self.timeout.as_secs()))?
    }

    /// Adds the policy's refusals by class to `page`.
    pub fn metrics(&self, page: &mut Page) {
        self.refused.metrics(page);
    }
}

/// The policy's refusal in `err`'s source chain, if that is why it failed.
pub fn refusal<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a Refused> {
    find::<Refused>(err)
}

/// The first error of type `T` in `err`'s source chain.
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<Class> {
        Class::of(ip.parse().unwrap())
    }

    #[test]
    fn every_denied_class_in_every_form() {
        let cases = [
            ("127.0.0.1", Some(Class::Loopback)),
            ("127.255.0.9", Some(Class::Loopback)),
            ("::1", Some(Class::Loopback)),
            ("::ffff:127.0.0.1", Some(Class::Loopback)),
            ("::127.0.0.1", Some(Class::Loopback)),
            ("64:ff9b::127.0.0.1", Some(Class::Loopback)),
            ("10.1.2.3", Some(Class::Private)),
            ("172.16.0.1", Some(Class::Private)),
            ("172.31.255.255", Some(Class::Private)),
            ("192.168.1.1", Some(Class::Private)),
            ("100.64.0.1", Some(Class::Private)),
            ("::ffff:10.0.0.1", Some(Class::Private)),
            ("::192.168.0.1", Some(Class::Private)),
            ("fc00::1", Some(Class::Private)),
            ("fd12:3456::1", Some(Class::Private)),
            ("fec0::1", Some(Class::Private)),
            ("169.254.169.254", Some(Class::LinkLocal)),
            ("::ffff:169.254.169.254", Some(Class::LinkLocal)),
            ("::169.254.169.254", Some(Class::LinkLocal)),
            ("fe80::1", Some(Class::LinkLocal)),
            ("224.0.0.1", Some(Class::Multicast)),
            ("239.255.255.250", Some(Class::Multicast)),
            ("255.255.255.255", Some(Class::Multicast)),
            ("ff02::1", Some(Class::Multicast)),
            ("::ffff:224.0.0.1", Some(Class::Multicast)),
            ("0.0.0.0", Some(Class::Unspecified)),
            ("0.1.2.3", Some(Class::Unspecified)),
            ("::", Some(Class::Unspecified)),
            ("::ffff:0.0.0.0", Some(Class::Unspecified)),
            // Public addresses, in each form.
            ("93.184.216.34", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("::ffff:93.184.216.34", None),
            ("2606:2800:220:1::1", None),
            ("fe00::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn the_allow_list_lets_an_address_through_in_every_form() {
        let policy = Policy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        for ip in ["127.0.0.1", "::ffff:127.0.0.1", "::127.0.0.1", "8.8.8.8"] {
            assert_eq!(policy.check(ip.parse().unwrap()), Ok(()), "{ip}");
        }
        for (ip, class) in [
            ("::1", Class::Loopback),
            ("10.0.0.1", Class::Private),
            ("169.254.169.254", Class::LinkLocal),
        ] {
            assert_eq!(policy.check(ip.parse().unwrap()), Err(class), "{ip}");
        }
        assert_eq!(
            Policy::default().check("127.0.0.1".parse().unwrap()),
            Err(Class::Loopback)
        );
    }

    #[test]
    fn a_brief_refusal_names_the_class_and_not_the_address() {
        for (ip, want) in [
            ("127.0.0.1", "a loopback address"),
            ("169.254.169.254", "a link-local address"),
            ("0.0.0.0", "an unspecified address"),
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            let refused = Refused {
                host: "h".into(),
                addr,
                class: Class::of(addr).unwrap(),
            };
            let brief = refused.brief();
            assert_eq!(
                brief,
                format!("{REFUSED}: {want}, which outbound.allow does not list")
            );
            assert!(!brief.contains(ip), "{brief}");
        }
    }

    async fn refused_by_default(url: &str) -> OutboundError {
        let out = Outbound::new(&OutboundConfig::default(), Refusals::default());
        let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
        out.send(req).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_name_and_literals_that_resolve_to_denied_addresses_are_refused_before_connecting() {
        // Nothing listens on port 9: a refusal must come from the policy, not the connect.
        for (url, class) in [
            ("http://localhost:9/", Class::Loopback),
            ("http://127.0.0.1:9/", Class::Loopback),
            ("http://[::ffff:127.0.0.1]:9/", Class::Loopback),
            ("http://[::127.0.0.1]:9/", Class::Loopback),
            ("http://169.254.169.254/latest/meta-data/", Class::LinkLocal),
            ("http://10.0.0.1:9/", Class::Private),
            ("http://[fd00::1]:9/", Class::Private),
            ("http://[fe80::1]:9/", Class::LinkLocal),
            ("http://224.0.0.1:9/", Class::Multicast),
            ("http://0.0.0.0:9/", Class::Unspecified),
            ("http://[::]:9/", Class::Unspecified),
        ] {
            match refused_by_default(url).await {
                OutboundError::Refused(r) => assert_eq!(r.class, class, "{url}"),
                other => panic!("{url}: {other}"),
            }
        }
    }
}
