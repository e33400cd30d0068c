//! The HTTP plumbing every adapter shares: send a request with the caller's trace, read the status
//! and a size-bounded body, and turn a failure into the class the create path needs (nothing was
//! sent, or the provider may have done the work), in words that hold no URL, body or token. And
//! the check of a configured base URL.
//!
//! Adapters build their client from [`crate::outbound::Outbound::client_builder`] (the outbound
//! rule, no redirects) with their own timeouts, then send through [`send`].

use crate::outbound::Outbound;
use crate::provider::ProviderError;

/// The most of a provider's answer that is read: far above any answer the providers document
/// (a few kilobytes), and small enough that a broken or hostile provider cannot fill the memory.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A provider's answer: its status and its whole body, at most [`MAX_ANSWER_BYTES`].
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// The body.
    pub body: Vec<u8>,
}

/// Sends `request` with the caller's trace and reads the whole answer. `what` names the call in
/// errors (`"BeTrust"`, `"gu1 create validation call"`).
///
/// Failures: not connected is [`ProviderError::Unavailable`] (nothing was sent); connected, then a
/// timeout or a cut connection, is [`ProviderError::Ambiguous`] (the provider may have done the
/// work); a body over [`MAX_ANSWER_BYTES`] is [`ProviderError::BadResponse`] (an unreadable
/// answer, which may hide done work too).
pub async fn send(request: reqwest::RequestBuilder, what: &str) -> Result<Answer, ProviderError> {
    let mut response = crate::trace::propagate(request)
        .send()
        .await
        .map_err(|e| transport_error(what, &e))?;
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large(what));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(what, &e))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large(what));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, body })
}

/// A transport failure as its class, in words that hold no URL (reqwest's own text names it).
pub fn transport_error(what: &str, error: &reqwest::Error) -> ProviderError {
    if error.is_connect() {
        return ProviderError::Unavailable(format!("{what} could not be reached"));
    }
    let how = if error.is_timeout() {
        "did not answer in time"
    } else {
        "failed before its answer"
    };
    ProviderError::Ambiguous(format!("{what} {how}"))
}

fn too_large(what: &str) -> ProviderError {
    ProviderError::BadResponse(format!(
        "{what} answered more than {MAX_ANSWER_BYTES} bytes"
    ))
}

/// A configured base URL: http(s), able to be a base, and a target `outbound` permits. `key`
/// names the setting in errors (`"gu1 base_url"`); the value is never repeated.
pub fn base_url(value: &str, key: &str, outbound: &Outbound) -> Result<url::Url, ProviderError> {
    let url = url::Url::parse(value.trim())
        .map_err(|_| ProviderError::Config(format!("{key} is not a valid URL")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(ProviderError::Config(format!(
            "{key} is not an http(s) URL"
        )));
    }
    outbound.check_target(&url).map_err(|why| {
        ProviderError::Config(format!(
            "{key} is refused: {why}; name the host or its address block in \
             server.outbound_allow to allow it"
        ))
    })?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on loopback that reads one request and then does `answer` with the socket.
    async fn server<F, Fut>(answer: F) -> String
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let _ = socket.read(&mut request).await;
            answer(socket).await;
        });
        url
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_millis(500))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn an_answer_is_read_whole_up_to_the_bound() {
        let url = server(|mut s| async move {
            let body = "x".repeat(MAX_ANSWER_BYTES);
            let head = format!(
                "HTTP/1.1 201 Created\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        })
        .await;
        let answer = send(client().get(url), "the provider").await.unwrap();
        assert_eq!(answer.status, reqwest::StatusCode::CREATED);
        assert_eq!(answer.body.len(), MAX_ANSWER_BYTES);
    }

    #[tokio::test]
    async fn an_answer_over_the_bound_is_refused_whether_announced_or_not() {
        let announced = server(|mut s| async move {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                MAX_ANSWER_BYTES + 1
            );
            let _ = s.write_all(head.as_bytes()).await;
        })
        .await;
        let error = send(client().get(announced), "the provider")
            .await
            .unwrap_err();
        assert!(matches!(error, ProviderError::BadResponse(_)), "{error:?}");
        let chunked = server(|mut s| async move {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let chunk = "y".repeat(64 * 1024);
            for _ in 0..(MAX_ANSWER_BYTES / chunk.len() + 2) {
                let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
                if s.write_all(framed.as_bytes()).await.is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        })
        .await;
        let error = send(client().get(chunked), "the provider")
            .await
            .unwrap_err();
        assert!(matches!(error, ProviderError::BadResponse(_)), "{error:?}");
        assert_eq!(error.on_create(), crate::provider::CreateFailure::Ambiguous);
    }

    #[tokio::test]
    async fn failures_are_classed_by_whether_the_request_was_sent() {
        // Nobody listening: not sent.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", listener.local_addr().unwrap())
        };
        let error = send(client().get(closed), "the provider")
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ProviderError::Unavailable("the provider could not be reached".into())
        );
        // Read, then the connection closed with no answer: sent.
        let cut = server(|s| async move { drop(s) }).await;
        let error = send(client().get(cut), "the provider").await.unwrap_err();
        assert_eq!(
            error,
            ProviderError::Ambiguous("the provider failed before its answer".into())
        );
        // Read, then no answer in time: sent.
        let silent = server(|s| async move {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            drop(s);
        })
        .await;
        let error = send(client().get(silent), "the provider")
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ProviderError::Ambiguous("the provider did not answer in time".into())
        );
    }
}
