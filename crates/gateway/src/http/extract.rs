//! Request extractors: the authenticated [`Tenant`] with a full-access key, or a [`Reader`] with
//! any key (authorization shows in a handler's signature, so no handler can forget it, and a new
//! handler needs a full-access key unless it says otherwise), and [`ValidJson`] (a body whose
//! every error names the field at fault, without echoing the value).

use crate::app::{AppState, Runtime};
use crate::config::{Scope, TenantConfig, describe_serde_error, hash_api_key};
use crate::http::problem::ApiError;
use crate::providers::limits::{Admission, RateLimitHeaders};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The tenant that owns the request's API key, with the policy snapshot it was resolved in.
pub struct Tenant {
    /// The tenant's name in the policy.
    pub name: String,
    /// The name of the API key the request came with (see [`crate::config::ApiKey::name`]).
    pub key_name: String,
    /// What that key may do.
    pub scope: Scope,
    /// The policy snapshot for this request.
    pub runtime: Arc<Runtime>,
}

impl Tenant {
    /// The tenant's settings.
    pub fn config(&self) -> &TenantConfig {
        &self.runtime.policy.tenants[&self.name]
    }
}

/// A tenant with a key of any scope: for the operations a read-only key may call (the figures,
/// the policy, previews).
pub struct Reader(pub Tenant);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticated(parts, state).await.map(Reader)
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    /// The tenant, once its key is known to have full access: a read-only key is refused (403).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let tenant = authenticated(parts, state).await?;
        if tenant.scope != Scope::Full {
            return Err(ApiError::ReadOnlyKey);
        }
        Ok(tenant)
    }
}

/// The tenant of the request's key, after the budget of failed authentications and the tenant's
/// rate limit.
async fn authenticated(parts: &mut Parts, state: &AppState) -> Result<Tenant, ApiError> {
    let source = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let runtime = state.runtime();
    let budget = runtime.auth_failures.clone();
    if let Some(wait) = source.and_then(|ip| budget.blocked_for(ip)) {
        crate::infra::telemetry::rate_limited("auth");
        return Err(ApiError::AuthRateLimited(wait));
    }
    let tenant = authenticate(parts, runtime);
    if tenant.is_err()
        && let Some(ip) = source
        && let Some(wait) = budget.record(ip)
    {
        crate::infra::telemetry::rate_limited("auth");
        return Err(ApiError::AuthRateLimited(wait));
    }
    let tenant = tenant?;
    let note = parts.extensions.get::<RequestNote>();
    if let Some(note) = note {
        note.with(|n| n.tenant = Some(tenant.name.clone()));
    }
    if let Some(limiter) = tenant.runtime.tenant_limits.get(&tenant.name) {
        let admission = limiter.admit();
        if let Some(note) = note {
            note.with(|n| n.rate_limit = Some(limiter.headers(admission)));
        }
        if let Admission::Refused { retry_after } = admission {
            crate::infra::telemetry::rate_limited("tenant");
            return Err(ApiError::TenantRateLimited(retry_after));
        }
    }
    Ok(tenant)
}

/// What the [`Tenant`] extractor learns that the layer around the request needs once the answer
/// is made, whatever the answer is: the tenant (for the request's metrics) and the `RateLimit`
/// headers of its limit.
#[derive(Clone, Default)]
pub struct RequestNote(Arc<std::sync::Mutex<Noted>>);

/// The contents of a [`RequestNote`].
#[derive(Default)]
pub struct Noted {
    /// The authenticated tenant.
    pub tenant: Option<String>,
    /// The headers of the tenant's rate limit.
    pub rate_limit: Option<RateLimitHeaders>,
}

impl RequestNote {
    fn with(&self, write: impl FnOnce(&mut Noted)) {
        write(
            &mut self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }

    /// What was noted.
    pub fn take(&self) -> Noted {
        std::mem::take(
            &mut self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// The tenant owning the request's key, if the key is valid.
fn authenticate(parts: &Parts, runtime: Arc<Runtime>) -> Result<Tenant, ApiError> {
    let key = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let (name, key_name, scope) = runtime
        .tenant_by_key_hash(&hash_api_key(key))
        .map(|(name, key)| (name.to_string(), key.name(), key.scope()))
        .ok_or(ApiError::Unauthorized)?;
    tracing::Span::current().record("tenant", name.as_str());
    Ok(Tenant {
        name,
        key_name,
        scope,
        runtime,
    })
}

/// A JSON body of type `T`, with the parsed document kept for hashing.
pub struct ValidJson<T> {
    /// The typed body.
    pub body: T,
    /// The same body as a JSON value.
    pub raw: serde_json::Value,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let LimitedBody(bytes) = LimitedBody::from_request(req, state).await?;
        let UniqueKeys(raw) = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
            field: None,
            detail: if e.to_string().starts_with(DUPLICATE_KEY) {
                format!(
                    "the body repeats a key in one object (line {}, column {})",
                    e.line(),
                    e.column()
                )
            } else {
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                )
            },
        })?;
        let body = read_body(&raw)?;
        Ok(ValidJson { body, raw })
    }
}

/// A JSON document as `T`, read as the published schema says (see [`Strict`]); the error names
/// the field at fault and what was expected, never the value.
pub fn read_body<T: DeserializeOwned>(raw: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(Strict(raw)).map_err(|e| {
        let message = e.inner().to_string();
        // An unknown field's path ends with the name sent: name the object it is in instead
        // (the detail lists the names expected there).
        let mut field = field_path(e.path(), message.starts_with("unknown field"));
        // "missing field `x`" is reported at the parent; name the field itself.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            field = if field.is_empty() {
                name.to_string()
            } else {
                format!("{field}.{name}")
            };
        }
        ApiError::Invalid {
            field: if field.is_empty() {
                "body".into()
            } else {
                field
            },
            detail: describe_serde_error(&message),
        }
    })
}

/// A dotted path to a field, as the problem's `field`. Keys the caller chose (a map's keys, a
/// name sent in error) are repeated only when they look like a field name of ours: short, lower
/// case, digits and `_`; any other is `*`. With `drop_last`, the last segment is left out.
fn field_path(path: &serde_path_to_error::Path, drop_last: bool) -> String {
    let segments: Vec<_> = path.iter().collect();
    let keep = segments.len() - usize::from(drop_last && !segments.is_empty());
    let mut out = String::new();
    for segment in &segments[..keep] {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                let plain = !key.is_empty()
                    && key.len() <= 40
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                out.push_str(if plain { key } else { "*" });
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// Query parameters of type `T`; a query string that cannot be read (a repeated parameter, say)
/// is a 400 problem. Each parameter's own rules are `T`'s to check.
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(params)| ValidQuery(params))
            .map_err(|_| ApiError::BadRequest {
                field: None,
                detail: "the query string could not be read".into(),
            })
    }
}

/// Cuts a page fetched with one row more than `limit`: the rows to answer, and the cursor of the
/// next page when there is one.
pub fn split_page<T>(
    mut items: Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        let next = items.last().map(|last| id(last).to_string());
        (items, next)
    } else {
        (items, None)
    }
}

/// A path parameter of type `T`; a segment that cannot be read (not UTF-8 once decoded, say) is a
/// 400 problem that does not repeat it.
pub struct ValidPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ValidPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ValidPath(value))
            .map_err(|_| ApiError::BadRequest {
                field: None,
                detail: "the path could not be read (it must be UTF-8 once decoded)".into(),
            })
    }
}

/// A raw body of at most the body limit; over it is a 413 problem.
pub struct LimitedBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(LimitedBody)
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else if caused_by::<tower_http::timeout::TimeoutError>(&rejection) {
                    ApiError::BodyTimeout
                } else {
                    ApiError::BadRequest {
                        field: None,
                        detail: "the body could not be read".into(),
                    }
                }
            })
    }
}

/// Whether `E` is somewhere in the chain of causes of `error`.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<E>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// A JSON value read by the rules of the published schema: where a type expects an object, only
/// an object will do. (Plain serde also fills a struct from an array of its fields in order, which
/// the schema forbids: `"checks": []` would pass as the default checks.)
struct Strict<'a>(&'a serde_json::Value);

impl<'de> serde::Deserializer<'de> for Strict<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        use serde_json::Value;
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(serde::de::value::SeqDeserializer::new(
                items.iter().map(Strict),
            )),
            Value::Object(map) => visitor.visit_map(serde::de::value::MapDeserializer::new(
                map.iter().map(|(k, v)| (k.as_str(), Strict(v))),
            )),
        }
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if self.0.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if self.0.is_object() {
            self.deserialize_any(visitor)
        } else {
            Err(serde::de::Error::invalid_type(unexpected(self.0), &visitor))
        }
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        use serde::de::IntoDeserializer;
        match self.0 {
            serde_json::Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            other => Err(serde::de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

impl<'de> serde::de::IntoDeserializer<'de, serde_json::Error> for Strict<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// What a value is, for an error that names the kind and never the value.
fn unexpected(value: &serde_json::Value) -> serde::de::Unexpected<'static> {
    use serde::de::Unexpected;
    match value {
        serde_json::Value::Null => Unexpected::Unit,
        serde_json::Value::Bool(_) => Unexpected::Other("a boolean"),
        serde_json::Value::Number(_) => Unexpected::Other("a number"),
        serde_json::Value::String(_) => Unexpected::Other("a string"),
        serde_json::Value::Array(_) => Unexpected::Seq,
        serde_json::Value::Object(_) => Unexpected::Map,
    }
}

const DUPLICATE_KEY: &str = "duplicate key";

/// A JSON document in which no object repeats a key. Plain parsing keeps the last of a repeated
/// key, so a body could say one thing to the hash and another to a reader; it is refused instead.
struct UniqueKeys(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(object.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_path_repeats_no_key_the_caller_chose_unless_it_looks_like_ours() {
        let long = "K".repeat(5_000);
        let body = serde_json::json!({
            "reference": "r",
            "subject": {"id": "s", "country": "CL", "provider_refs": {long.as_str(): 5}},
        });
        let Err(ApiError::Invalid { field, detail }) =
            read_body::<crate::http::input::CreateVerification>(&body)
        else {
            panic!("a number as a provider ref was read");
        };
        assert_eq!(field, "subject.provider_refs.*");
        assert!(!detail.contains(&long));
        let plain = serde_json::json!({
            "reference": "r",
            "subject": {"id": "s", "country": "CL", "provider_refs": {"gu1": 5}},
        });
        let Err(ApiError::Invalid { field, .. }) =
            read_body::<crate::http::input::CreateVerification>(&plain)
        else {
            panic!("a number as a provider ref was read");
        };
        assert_eq!(field, "subject.provider_refs.gu1");
    }

    #[test]
    fn a_struct_is_read_only_from_an_object() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Inner {
            #[serde(default)]
            a: bool,
        }
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Outer {
            inner: Option<Inner>,
            tags: Vec<String>,
            kind: kyc_core::Status,
        }
        let read = |v: serde_json::Value| {
            serde_path_to_error::deserialize::<_, Outer>(Strict(&v))
                .map_err(|e| e.path().to_string())
        };
        assert_eq!(
            read(serde_json::json!({"inner": {"a": true}, "tags": ["x"], "kind": "approved"})),
            Ok(Outer {
                inner: Some(Inner { a: true }),
                tags: vec!["x".into()],
                kind: kyc_core::Status::Approved,
            })
        );
        assert!(read(serde_json::json!({"inner": null, "tags": [], "kind": "pending"})).is_ok());
        assert_eq!(
            read(serde_json::json!({"inner": [], "tags": [], "kind": "pending"})),
            Err("inner".to_string())
        );
        assert!(read(serde_json::json!([null, [], "pending"])).is_err());
        assert_eq!(
            read(serde_json::json!({"inner": null, "tags": [], "kind": "nope"})),
            Err("kind".to_string())
        );
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        let parse = |text: &str| serde_json::from_str::<UniqueKeys>(text).map(|u| u.0);
        assert_eq!(
            parse(r#"{"a": [1, {"b": null}], "c": 1.5}"#).unwrap(),
            serde_json::json!({"a": [1, {"b": null}], "c": 1.5})
        );
        for text in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"s": {"id": "x", "id": "y"}}"#,
            r#"[{"k": 1, "k": 1}]"#,
        ] {
            let error = parse(text).unwrap_err();
            assert!(
                error.to_string().starts_with(DUPLICATE_KEY),
                "{text}: {error}"
            );
        }
    }
}
