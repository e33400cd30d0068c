//! Didit's webhooks: the canonical JSON its server writes (and signs), the four signature
//! headers, and delivery with Didit's retries.
//!
//! The body is Python's `json.dumps(shorten_floats(p), sort_keys=True, separators=(",", ":"))`:
//! receivers verify `X-Signature` over the raw bytes, but `X-Signature-V2` over their own
//! re-encoding of the parsed body, so the sandbox must write exactly what Didit writes or a
//! correct receiver would refuse it.

use super::{Shared, decision::Session, decision::WITH_DECISION};
use crate::{Delivery, SentWebhook, deliver_webhook, lock};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Number, Value};
use sha2::Sha256;
use std::{
    fmt::Write,
    sync::{Arc, Weak, atomic::Ordering},
    time::Duration,
};

/// Didit's webhook `User-Agent`.
const USER_AGENT: &str = "DiditWebhook/2.0 +https://didit.me";

/// The waits before each retry of a failed delivery (Didit documents "bounded retries"; the
/// count and backoff are the sandbox's, short so that tests see them all).
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
];

/// Encodes `value` as Didit's server does: keys sorted by code point at every level, no
/// whitespace, integral floats as ints (`100.0` → `100`), other floats in Python's shortest
/// round-trip form, `/` unescaped; with `ensure_ascii`, every non-ASCII character as `\uXXXX`
/// (lowercase hex; a UTF-16 surrogate pair above the BMP), otherwise as raw UTF-8.
///
/// Integers beyond 64 bits (which `serde_json::Value` holds as floats) are the one known
/// difference from Python; no Didit payload carries one.
pub(crate) fn canonical_json(value: &Value, ensure_ascii: bool) -> String {
    let mut out = String::new();
    write_value(&mut out, value, ensure_ascii);
    out
}

fn write_value(out: &mut String, value: &Value, ascii: bool) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s, ascii),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, ascii);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted here, whatever order the map keeps: String's byte order is code point order.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key, ascii);
                out.push(':');
                write_value(out, item, ascii);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        write_float(out, f);
    }
}

/// A float as `shorten_floats` then Python's `repr` write it.
fn write_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        // A serde_json::Value never holds one.
        out.push_str("null");
    } else if f.fract() == 0.0 {
        // Python's int(f): every digit, and no sign on zero.
        if f == 0.0 {
            out.push('0');
        } else {
            let _ = write!(out, "{f:.0}");
        }
    } else {
        // Both Rust forms give the shortest digits that round-trip, as repr does; repr switches
        // to `d.ddde-XX` below 1e-4 (and from 1e16, where no float has a fraction).
        let scientific = format!("{f:e}");
        let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        if (-4..16).contains(&exponent) {
            let _ = write!(out, "{f}");
        } else {
            let sign = if exponent < 0 { '-' } else { '+' };
            let _ = write!(out, "{mantissa}e{sign}{:02}", exponent.unsigned_abs());
        }
    }
}

/// A JSON string as Python's encoder writes it (`ensure_ascii` also escapes DEL and everything
/// beyond ASCII; otherwise only `"`, `\` and control characters are escaped).
fn write_string(out: &mut String, s: &str, ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Lowercase hex HMAC-SHA256 of `data` under `secret`, as in each of Didit's signature headers.
pub(super) fn sign(secret: &str, data: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Now, in Unix seconds, as the body's `timestamp` and `X-Timestamp`.
fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A new event about `session` (a fresh `event_id`), stamped now. `vendor_data` and `metadata`
/// appear only when the session has them, the decision only in the statuses Didit sends it in.
pub(super) fn payload(shared: &Shared, session: &Session, webhook_type: &'static str) -> Value {
    let config = &shared.config;
    let mut p = Map::new();
    p.insert("event_id".into(), uuid::Uuid::new_v4().to_string().into());
    p.insert("webhook_type".into(), webhook_type.into());
    p.insert("timestamp".into(), now_unix().into());
    p.insert("created_at".into(), session.created_at.timestamp().into());
    p.insert(
        "application_id".into(),
        config.application_id.clone().into(),
    );
    p.insert("environment".into(), "sandbox".into());
    p.insert("session_id".into(), session.id.clone().into());
    p.insert("status".into(), session.status.into());
    p.insert("workflow_id".into(), config.workflow_id.clone().into());
    p.insert("workflow_version".into(), 1.into());
    if let Some(vendor_data) = &session.vendor_data {
        p.insert("vendor_data".into(), vendor_data.clone().into());
    }
    if let Some(metadata) = &session.metadata {
        p.insert("metadata".into(), metadata.clone());
    }
    if WITH_DECISION.contains(&session.status) {
        p.insert("decision".into(), session.decision(&config.workflow_id));
    }
    Value::Object(p)
}

/// The body Didit sends for `payload`, and the headers beside `Content-Type`: `X-Signature`
/// over the body (non-ASCII escaped), `X-Signature-V2` over the same form with raw UTF-8,
/// `X-Signature-Simple` over `timestamp:session_id:status:webhook_type` (`""` for a missing
/// one), and `X-Timestamp`.
pub(super) fn signed(secret: &str, payload: &Value) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let body = canonical_json(payload, true);
    let unescaped = canonical_json(payload, false);
    let field = |key: &str| match payload.get(key) {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    };
    let timestamp = field("timestamp");
    let simple = format!(
        "{timestamp}:{}:{}:{}",
        field("session_id"),
        field("status"),
        field("webhook_type")
    );
    let headers = vec![
        ("User-Agent", USER_AGENT.to_owned()),
        ("X-Signature", sign(secret, body.as_bytes())),
        ("X-Signature-V2", sign(secret, unescaped.as_bytes())),
        ("X-Signature-Simple", sign(secret, simple.as_bytes())),
        ("X-Timestamp", timestamp),
    ];
    (body.into_bytes(), headers)
}

/// Whether Didit tries a delivery again: it does when the endpoint fails, answers 5xx, or 404.
fn retried(delivery: Delivery) -> bool {
    match delivery {
        Delivery::Delivered => false,
        Delivery::Refused(status) => status == 404 || status >= 500,
        Delivery::Failed => true,
    }
}

/// Sends a new event to the application's webhook destination, if it has one, and waits for the
/// first attempt; a failed one is retried in the background.
pub(super) async fn send(shared: &Arc<Shared>, session_id: &str, payload: Value) {
    let Some(url) = lock(&shared.webhook_url).clone() else {
        return;
    };
    let (body, headers) = signed(&shared.config.webhook_secret, &payload);
    shared.attempts.fetch_add(1, Ordering::SeqCst);
    let delivery = shared
        .webhooks
        .send(&shared.http, "didit", session_id, &url, body, headers)
        .await;
    if retried(delivery) {
        retry_later(Arc::downgrade(shared), session_id.to_owned(), url, payload);
    }
}

/// Delivers again an event already sent (the same `event_id`), stamped and signed now so that it
/// stays inside a receiver's 5-minute window; it is retried as a first delivery is.
pub(super) async fn send_again(
    shared: &Arc<Shared>,
    recorded: SentWebhook,
) -> Result<(), crate::SandboxError> {
    let mut payload: Value =
        serde_json::from_slice(&recorded.body).map_err(|_| crate::SandboxError::NotFound)?;
    payload["timestamp"] = now_unix().into();
    let delivery = attempt(shared, &recorded.verification_id, &recorded.url, &payload).await;
    if retried(delivery) {
        retry_later(
            Arc::downgrade(shared),
            recorded.verification_id,
            recorded.url,
            payload,
        );
    }
    Ok(())
}

/// One attempt of `payload`, stamped as it is, not recorded as a new webhook.
async fn attempt(shared: &Shared, session_id: &str, url: &str, payload: &Value) -> Delivery {
    let (body, headers) = signed(&shared.config.webhook_secret, payload);
    shared.attempts.fetch_add(1, Ordering::SeqCst);
    let webhook = SentWebhook {
        verification_id: session_id.to_owned(),
        url: url.to_owned(),
        body,
        headers,
    };
    deliver_webhook(&shared.http, "didit", webhook).await
}

/// Retries a failed delivery after each of [`RETRY_DELAYS`], each time with a fresh timestamp and
/// signatures over the same event, until one is accepted. Stops when the session is deleted
/// (Didit drops deliveries queued for it) or the simulator is dropped.
fn retry_later(shared: Weak<Shared>, session_id: String, url: String, mut payload: Value) {
    tokio::spawn(async move {
        for delay in RETRY_DELAYS {
            tokio::time::sleep(delay).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if lock(&shared.state).live(&session_id).is_none() {
                tracing::debug!(provider = "didit", session = %session_id, "sandbox: retries dropped, session deleted");
                return;
            }
            payload["timestamp"] = now_unix().into();
            if !retried(attempt(&shared, &session_id, &url, &payload).await) {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_and_strings_are_written_as_python_writes_them() {
        let value = json!({
            "b": [100.0, 0.0, -0.0, 96.15, 95.4, 1e-5, 0.0001, 1.5e-7, -2.5, 1e20, 7],
            "a": "José/北京 😀 \u{7f}\"\\\n\u{1}",
            "10": 1, "2": 2, "9": {"z": null, "y": true, "x": {}},
        });
        assert_eq!(
            canonical_json(&value, true),
            "{\"10\":1,\"2\":2,\"9\":{\"x\":{},\"y\":true,\"z\":null},\
             \"a\":\"Jos\\u00e9/\\u5317\\u4eac \\ud83d\\ude00 \\u007f\\\"\\\\\\n\\u0001\",\
             \"b\":[100,0,0,96.15,95.4,1e-05,0.0001,1.5e-07,-2.5,100000000000000000000,7]}"
        );
        assert_eq!(
            canonical_json(&value["a"], false),
            "\"José/北京 😀 \u{7f}\\\"\\\\\\n\\u0001\""
        );
    }

    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn simple_signature_covers_four_fields_with_empty_ones_missing() {
        let (body, headers) = signed("k", &json!({"timestamp": 5, "status": "Approved"}));
        assert_eq!(body, br#"{"status":"Approved","timestamp":5}"#);
        let header = |name| headers.iter().find(|(n, _)| *n == name).unwrap().1.clone();
        assert_eq!(header("X-Signature-Simple"), sign("k", b"5::Approved:"));
        assert_eq!(header("X-Timestamp"), "5");
        assert_eq!(header("X-Signature"), header("X-Signature-V2"));
    }
}
