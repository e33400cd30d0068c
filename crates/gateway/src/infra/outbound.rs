//! HTTP to addresses that callers choose (tenants' `webhook_url`), safe against server-side
//! request forgery by the rule in [`kyc_core::outbound`] (the one provider clients follow too).
//!
//! The check runs twice: once before the request, for a clear refusal, and again inside the
//! client's resolver, so that the connection goes only to addresses that passed (a DNS answer that
//! changes in between cannot slip a private address in). Redirects are not followed, every request
//! has connect and total timeouts, and at most [`MAX_BODY`] bytes of an answer are read.

pub use kyc_core::outbound::{AllowEntry, Allowlist, Outbound, is_public};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most bytes read of an answer's body.
pub const MAX_BODY: usize = 4096;

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
    rule: Outbound,
}

impl OutboundClient {
    /// A client honouring `rule`, with the given total timeout per request.
    pub fn new(rule: Outbound, timeout: Duration) -> OutboundClient {
        let http = rule
            .client_builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()
            .expect("the HTTP client builds");
        OutboundClient { http, rule }
    }

    /// Checks `url` against the rule, resolving its host: a host that does not resolve is refused.
    pub async fn check(&self, url: &str) -> Result<reqwest::Url, OutboundError> {
        let url = reqwest::Url::parse(url).map_err(|_| OutboundError::Refused("not a URL"))?;
        let host = url
            .host_str()
            .ok_or(OutboundError::Refused("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) if self.rule.allowlist().host(&host) => Vec::new(),
            Err(_) => tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| OutboundError::Refused("the host does not resolve"))?
                .map(|a| a.ip())
                .collect(),
        };
        self.rule
            .judge(&url, Some(&addresses))
            .map_err(OutboundError::Refused)?;
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

    #[tokio::test]
    async fn targets_are_checked_before_any_request() {
        let strict = OutboundClient::new(Outbound::default(), Duration::from_secs(1));
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
            Outbound::new(Allowlist::new(&["127.0.0.0/8".into(), "localhost".into()])),
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
