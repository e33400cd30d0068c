//! Where provider clients and the gateway's webhook client may connect: the one rule every
//! outbound HTTP client follows, against server-side request forgery.
//!
//! A target is refused when it is plain http, or when its host is, or resolves to, a loopback,
//! private, link-local (cloud metadata lives there), shared, multicast, documentation or otherwise
//! non-public address, unless `[server] outbound_allow` names the host or a block holding the
//! address. Configured targets (provider base URLs) are checked when an instance is built
//! ([`Outbound::check_target`]: `check-config`, start, reload); every client made by
//! [`Outbound::client_builder`] checks again inside its resolver, so it connects only to addresses
//! that pass (a DNS answer that changes later cannot slip a private address in), and it never
//! follows a redirect.

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

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

    /// Whether `host` is named, by host name.
    pub fn host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0
            .iter()
            .any(|e| matches!(e, AllowEntry::Host(h) if *h == host))
    }

    /// Whether `ip` is inside a listed block.
    pub fn address(&self, ip: IpAddr) -> bool {
        self.0
            .iter()
            .any(|e| matches!(e, AllowEntry::Block(b) if b.contains(&ip)))
    }

    /// Whether the client may connect to `ip` for `host`.
    pub fn permits(&self, host: &str, ip: IpAddr) -> bool {
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
                // IPv4-compatible (::/96, deprecated), 6to4 (2002::/16) and local-use NAT64
                // (64:ff9b:1::/48) carry or reach IPv4 addresses the rule cannot see.
                || s[0..6] == [0, 0, 0, 0, 0, 0]
                || s[0] == 0x2002
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// The outbound rule, shared by every client built from it.
#[derive(Clone, Default)]
pub struct Outbound {
    allow: Arc<Allowlist>,
    proxy: Option<Arc<url::Url>>,
}

impl std::fmt::Debug for Outbound {
    /// The proxy by its host only: its URL may carry credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("allow", &self.allow)
            .field("proxy", &self.proxy.as_deref().and_then(url::Url::host_str))
            .finish()
    }
}

impl Outbound {
    /// The rule with `allow` as its exemptions.
    pub fn new(allow: Allowlist) -> Outbound {
        Outbound {
            allow: Arc::new(allow),
            proxy: None,
        }
    }

    /// The rule with every connection made through the HTTP(S) proxy at `proxy` (the policy's
    /// `server.outbound_proxy`). The proxy's own host is exempt from the rule, as it was named
    /// on purpose. Targets are still judged: each configured or caller-chosen target before it
    /// is used ([`Outbound::check_target`], which then also refuses a name that does not
    /// resolve, as no later check would see it), while the name is resolved again by the proxy.
    pub fn through_proxy(allow: &[String], proxy: url::Url) -> Outbound {
        let mut entries = allow.to_vec();
        if let Some(host) = host_of(&proxy) {
            entries.push(host);
        }
        Outbound {
            allow: Arc::new(Allowlist::new(&entries)),
            proxy: Some(Arc::new(proxy)),
        }
    }

    /// The proxy every connection goes through, if any.
    pub fn proxy(&self) -> Option<&url::Url> {
        self.proxy.as_deref()
    }

    /// The exemptions.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allow
    }

    /// Judges `url` given the addresses its host has (`None`: it could not be resolved).
    /// `Err` says why, never naming the target.
    pub fn judge(&self, url: &url::Url, addresses: Option<&[IpAddr]>) -> Result<(), &'static str> {
        let host = host_of(url).ok_or("the URL has no host")?;
        let named = self.allow.host(&host);
        let all_in_blocks =
            addresses.is_some_and(|a| !a.is_empty() && a.iter().all(|ip| self.allow.address(*ip)));
        if named || all_in_blocks {
            return Ok(());
        }
        if url.scheme() != "https" {
            return Err("plain http to a host that server.outbound_allow does not exempt");
        }
        match addresses {
            Some(a) if a.is_empty() || !a.iter().all(|ip| is_public(*ip)) => {
                Err("it points at a loopback, private, link-local or otherwise non-public address")
            }
            _ => Ok(()),
        }
    }

    /// Checks a configured target now, resolving its host with the system resolver. Without a
    /// proxy, a host that does not resolve at this moment is not refused for it: the resolver of
    /// every client made by [`Outbound::client_builder`] checks again at each connection. Through
    /// a proxy nothing checks later (the proxy resolves the name), so it is refused.
    pub fn check_target(&self, url: &url::Url) -> Result<(), &'static str> {
        let host = host_of(url).ok_or("the URL has no host")?;
        let addresses: Option<Vec<IpAddr>> = match host.parse::<IpAddr>() {
            Ok(ip) => Some(vec![ip]),
            Err(_) => (host.as_str(), 0)
                .to_socket_addrs()
                .ok()
                .map(|found| found.map(|a| a.ip()).collect()),
        };
        if self.proxy.is_some() && addresses.is_none() && !self.allow.host(&host) {
            return Err(
                "the host does not resolve, and through server.outbound_proxy it could \
                        not be checked later",
            );
        }
        self.judge(url, addresses.as_deref())
    }

    /// An HTTP client builder that follows no redirect (it would re-send credentials and
    /// personal data wherever it points), connects only to addresses this rule permits, and
    /// ignores the proxy variables of the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`):
    /// through a proxy the resolver would only check the proxy's host, and the proxy would reach
    /// any target. Only the proxy the rule names explicitly is used.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder().no_proxy();
        let builder = match self
            .proxy
            .as_deref()
            .map(|p| reqwest::Proxy::all(p.as_str()))
        {
            Some(Ok(proxy)) => builder.proxy(proxy),
            _ => builder,
        };
        builder
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(CheckedResolver {
                allow: self.allow.clone(),
            }))
    }
}

/// The host of `url`, without IPv6 brackets.
fn host_of(url: &url::Url) -> Option<String> {
    Some(
        url.host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
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
            "::a9fe:a9fe",
            "::169.254.169.254",
            "2002:a9fe:a9fe::1",
            "2002:808:808::1",
            "64:ff9b:1::a9fe:a9fe",
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

    fn strict() -> Outbound {
        Outbound::default()
    }

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn configured_targets_are_judged_by_scheme_and_address() {
        for target in [
            "http://127.0.0.1:9/api",
            "https://127.0.0.1/api",
            "https://[::1]/api",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "http://8.8.8.8/",
            "https://localhost/",
        ] {
            assert!(strict().check_target(&url(target)).is_err(), "{target}");
        }
        assert!(strict().check_target(&url("https://8.8.8.8/")).is_ok());
        let allowed = Outbound::new(Allowlist::new(&[
            "127.0.0.1".into(),
            "kyc-mock.internal".into(),
        ]));
        assert!(allowed.check_target(&url("http://127.0.0.1:9/api")).is_ok());
        assert!(
            allowed
                .check_target(&url("http://kyc-mock.internal/api"))
                .is_ok()
        );
        assert!(allowed.check_target(&url("https://10.0.0.1/")).is_err());
    }

    #[test]
    fn a_name_that_does_not_resolve_now_is_left_to_the_connect_time_check() {
        let name = url("https://no-such-host.invalid/api");
        assert!(strict().check_target(&name).is_ok());
        // Plain http still needs an exemption, resolved or not.
        assert!(
            strict()
                .check_target(&url("http://no-such-host.invalid/"))
                .is_err()
        );
    }

    /// A server on 127.0.0.1 that counts the connections it accepts and answers each with `answer`.
    async fn counting_server(answer: &'static str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn a_client_connects_only_where_the_rule_permits_after_resolution() {
        let (port, accepted) =
            counting_server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        // `localhost` passes no check made before the request: the resolver refuses it.
        let refused = strict()
            .client_builder()
            .build()
            .unwrap()
            .get(format!("http://localhost:{port}/"))
            .send()
            .await;
        assert!(refused.is_err());
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);

        let allowed = Outbound::new(Allowlist::new(&["localhost".into()]))
            .client_builder()
            .build()
            .unwrap()
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(allowed.status(), 200);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_client_does_not_follow_a_redirect() {
        let (port, accepted) = counting_server(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let answer = Outbound::new(Allowlist::new(&["127.0.0.0/8".into()]))
            .client_builder()
            .build()
            .unwrap()
            .post(format!("http://127.0.0.1:{port}/"))
            .body("personal data")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 307);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn through_a_proxy_targets_are_still_judged_and_the_proxy_is_exempt() {
        let proxy = url::Url::parse("http://10.0.0.9:3128").unwrap();
        let rule = Outbound::through_proxy(&["hooks.internal".into()], proxy);
        let check = |u: &str| rule.check_target(&url::Url::parse(u).unwrap());
        assert!(check("https://169.254.169.254/latest").is_err());
        assert!(check("https://[::ffff:169.254.169.254]/latest").is_err());
        assert!(check("http://1.1.1.1/").is_err(), "plain http");
        assert!(check("https://1.1.1.1/").is_ok());
        assert!(
            check("https://name.invalid/").is_err(),
            "cannot be checked later"
        );
        assert!(
            check("https://hooks.internal/").is_ok(),
            "named in the allowlist"
        );
        assert!(
            rule.allowlist().host("10.0.0.9")
                || rule.allowlist().address("10.0.0.9".parse().unwrap())
        );
        assert_eq!(
            rule.proxy().map(url::Url::as_str),
            Some("http://10.0.0.9:3128/")
        );
        let with_password = url::Url::parse("http://egress:s3cret-Zq7@10.0.0.9:3128").unwrap();
        let shown = format!("{:?}", Outbound::through_proxy(&[], with_password));
        assert!(!shown.contains("s3cret-Zq7"), "{shown}");
        // Without a proxy, a name that does not resolve now is checked at each connection.
        let direct = Outbound::new(Allowlist::new(&[]));
        assert!(
            direct
                .check_target(&url::Url::parse("https://name.invalid/").unwrap())
                .is_ok()
        );
    }
}
