//! HTTP to addresses that callers choose (tenants' `webhook_url`), safe against server-side
//! request forgery.
//!
//! A target is refused when it is plain http, or when its host is, or resolves to, a loopback,
//! private, link-local (cloud metadata lives there), shared, multicast, documentation or otherwise
//! non-public address, unless `[server] outbound_allow` names the host or a block holding the
//! address. The check runs twice: once before the request, for a clear refusal, and again inside
//! the client's resolver, so that the connection goes only to addresses that passed (a DNS answer
//! that changes in between cannot slip a private address in). Redirects are not followed, every
//! request has connect and total timeouts, and at most [`MAX_BODY`] bytes of an answer are read.

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes read of an answer's body.
pub const MAX_BODY: usize = 4096;

/// One entry of `outbound_allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// An address block (a single address is a /32 or /128).
    Block(IpNet),
    /// A host name, compared without case.
    Host(String),
}

impl AllowEntry {
    /// Reads `10.20.0.0/16`, `127.0.0.1` or `kyc-mock.internal`; `None` for anything else.
    pub fn parse(entry: &str) -> Option<AllowEntry> {
        let entry = entry.trim();
        if let Ok(block) = entry.parse::<IpNet>() {
            return Some(AllowEntry::Block(block));
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Some(AllowEntry::Block(IpNet::from(ip)));
        }
        let is_host = !entry.is_empty()
            && entry.len() <= 253
            && entry.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        is_host.then(|| AllowEntry::Host(entry.to_ascii_lowercase()))
    }
}

/// The parsed `outbound_allow` list.
#[derive(Debug, Clone, Default)]
pub struct Allowlist(Vec<AllowEntry>);

impl Allowlist {
    /// Parses the policy's entries (already validated at load; an unreadable one is skipped).
    pub fn new(entries: &[String]) -> Allowlist {
        Allowlist(
            entries
                .iter()
                .filter_map(|e| AllowEntry::parse(e))
                .collect(),
        )
    }

    fn host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0
            .iter()
            .any(|e| matches!(e, AllowEntry::Host(h) if *h == host))
    }

    fn address(&self, ip: IpAddr) -> bool {
        self.0
            .iter()
            .any(|e| matches!(e, AllowEntry::Block(b) if b.contains(&ip)))
    }

    /// Whether the client may connect to `ip` for `host`.
    fn permits(&self, host: &str, ip: IpAddr) -> bool {
        self.host(host) || self.address(ip) || is_public(ip)
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local, shared
/// (CGNAT), multicast, broadcast, documentation, benchmarking or reserved. IPv4 inside IPv6
/// (mapped, NAT64) is judged as the IPv4 address it carries.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let v4 = std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                );
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// Why an outbound request was not made or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The target is not allowed; the text says why, without the address itself.
    #[error("target refused: {0}")]
    Refused(&'static str),
    /// Connecting, sending or reading failed or timed out.
    #[error("request failed: {0}")]
    Failed(String),
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After` in seconds, when the receiver sent one as a number.
    pub retry_after: Option<u64>,
    /// Time from sending to the end of the (capped) body.
    pub latency: Duration,
}

/// A client for caller-chosen targets.
#[derive(Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    allow: Arc<Allowlist>,
}

/// Resolves host names for the client, keeping only addresses the allowlist permits.
struct CheckedResolver {
    allow: Arc<Allowlist>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow.permits(&host, a.ip()))
                .collect();
            if permitted.is_empty() || permitted.len() != found.len() {
                return Err(Box::new(std::io::Error::other(
                    "the host resolves to an address that is not allowed",
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

impl OutboundClient {
    /// A client honouring `allow`, with the given total timeout per request.
    pub fn new(allow: Allowlist, timeout: Duration) -> OutboundClient {
        let allow = Arc::new(allow);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .dns_resolver(Arc::new(CheckedResolver {
                allow: allow.clone(),
            }))
            .build()
            .expect("the HTTP client builds");
        OutboundClient { http, allow }
    }

    /// Checks `url` against the rules above, resolving its host.
    pub async fn check(&self, url: &str) -> Result<reqwest::Url, OutboundError> {
        let url = reqwest::Url::parse(url).map_err(|_| OutboundError::Refused("not a URL"))?;
        let host = url
            .host_str()
            .ok_or(OutboundError::Refused("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let named = self.allow.host(&host);
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| OutboundError::Refused("the host does not resolve"))?
                .map(|a| a.ip())
                .collect(),
        };
        let all_allowed = addresses.iter().all(|ip| self.allow.address(*ip));
        if !named && !all_allowed {
            if url.scheme() != "https" {
                return Err(OutboundError::Refused(
                    "plain http to a host that outbound_allow does not name",
                ));
            }
            if addresses.is_empty() || !addresses.iter().all(|ip| is_public(*ip)) {
                return Err(OutboundError::Refused(
                    "a loopback, private or otherwise non-public address",
                ));
            }
        }
        Ok(url)
    }

    /// POSTs `body` with `headers` to `url` after [`OutboundClient::check`].
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<Answer, OutboundError> {
        let url = self.check(url).await?;
        let mut request = self.http.post(url).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let started = Instant::now();
        let mut response = request
            .send()
            .await
            .map_err(|e| OutboundError::Failed(describe(&e)))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut read = 0;
        while read < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) => break,
                Err(e) => return Err(OutboundError::Failed(describe(&e))),
            }
        }
        Ok(Answer {
            status,
            retry_after,
            latency: started.elapsed(),
        })
    }
}

/// A short cause without the URL (which reqwest errors carry).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "could not read the answer"
    } else {
        "failed"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_recognized() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn allow_entries_parse() {
        assert_eq!(
            AllowEntry::parse("10.20.0.0/16"),
            Some(AllowEntry::Block("10.20.0.0/16".parse().unwrap()))
        );
        assert_eq!(
            AllowEntry::parse("127.0.0.1"),
            Some(AllowEntry::Block("127.0.0.1/32".parse().unwrap()))
        );
        assert_eq!(
            AllowEntry::parse("KYC-Mock.internal"),
            Some(AllowEntry::Host("kyc-mock.internal".into()))
        );
        for bad in ["", "http://x", "a..b", "10.0.0.0/99", "a b"] {
            assert_eq!(AllowEntry::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn targets_are_checked_before_any_request() {
        let strict = OutboundClient::new(Allowlist::default(), Duration::from_secs(1));
        for url in [
            "http://127.0.0.1:9/hook",
            "https://127.0.0.1/hook",
            "https://[::1]/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "http://8.8.8.8/",
            "https://localhost/",
        ] {
            assert!(
                matches!(strict.check(url).await, Err(OutboundError::Refused(_))),
                "{url}"
            );
        }
        assert!(strict.check("https://8.8.8.8/").await.is_ok());
        let allowed = OutboundClient::new(
            Allowlist::new(&["127.0.0.0/8".into(), "localhost".into()]),
            Duration::from_secs(1),
        );
        assert!(allowed.check("http://127.0.0.1:9/hook").await.is_ok());
        assert!(allowed.check("http://localhost:9/hook").await.is_ok());
        assert!(matches!(
            allowed.check("https://10.0.0.1/").await,
            Err(OutboundError::Refused(_))
        ));
    }
}
