//! Reading the policy: TOML, then `${VAR}` from the environment, then serde, then every check.

use super::{Policy, PolicyError, invalid};

/// The gateway's own secret setting, which must come from the environment: a tenant's
/// `webhook_secret`. Adapters name theirs ([`kyc_core::AdapterConfig::SECRETS`]).
const TENANT_SECRET: &str = "webhook_secret";

impl Policy {
    /// Reads and validates a policy file, taking `${VAR}` values from the process environment.
    pub fn load(path: &str) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_string(),
            source,
        })?;
        Policy::parse(&text, |name| std::env::var(name).ok())
    }

    /// Parses and validates policy text, taking `${VAR}` values from `env`.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Policy, PolicyError> {
        Policy::parse_all(text, env).map_err(|mut all| all.remove(0))
    }

    /// Like [`Policy::parse`], with every error found instead of the first: a syntax error stops
    /// there; otherwise every `${VAR}` problem, or else the first key serde refuses, or else every
    /// error of [`Policy::problems`].
    pub fn parse_all(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Policy, Vec<PolicyError>> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| vec![syntax_error(text, &e)])?;
        let mut problems = Vec::new();
        let mut from_env = std::collections::BTreeSet::new();
        interpolate(&mut value, "", &env, &mut problems, &mut from_env);
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut policy: Policy = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            vec![invalid(
                if key == "." { "policy".into() } else { key },
                describe_serde_error(&e.into_inner().to_string()),
            )]
        })?;
        for (name, config) in policy.providers.iter_mut() {
            let section = format!("providers.{name}.");
            config.from_env = from_env
                .iter()
                .filter_map(|path| path.strip_prefix(&section))
                .map(str::to_string)
                .collect();
        }
        let problems = policy.problems();
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }
}

/// Rewrites a serde error message so that it names what was expected but never echoes the value
/// (which may be a secret or personal data).
pub fn describe_serde_error(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    if message.starts_with("missing field") {
        return message.to_string();
    }
    // "unknown field `<what was sent>`, expected one of ...": the name sent is not repeated (it
    // can be anything, of any length); the names expected are ours.
    if message.starts_with("unknown field") {
        return match message.find(", expected ") {
            Some(i) => format!(
                "unknown field; expected {}",
                &message[i + ", expected ".len()..]
            ),
            None => "unknown field".to_string(),
        };
    }
    match message.rfind(", expected ") {
        Some(i) => format!(
            "invalid value, expected {}",
            &message[i + ", expected ".len()..]
        ),
        None if message.starts_with("unknown variant") => "unknown value".to_string(),
        None => "invalid value".to_string(),
    }
}

/// A TOML syntax error with its line and column (never the text around it).
fn syntax_error(text: &str, error: &toml::de::Error) -> PolicyError {
    let at = error.span().map_or(0, |span| span.start).min(text.len());
    let before = &text[..text.floor_char_boundary(at)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    PolicyError::Syntax(format!("line {line}, column {column}: {}", error.message()))
}

/// Replaces each `"${VAR}"` with the variable's value, noting its path in `from_env`.
fn interpolate(
    value: &mut toml::Value,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<PolicyError>,
    from_env: &mut std::collections::BTreeSet<String>,
) {
    match value {
        toml::Value::String(s) => {
            let tenant_secret =
                path.starts_with("tenants.") && path.rsplit('.').next() == Some(TENANT_SECRET);
            let reference = s
                .strip_prefix("${")
                .and_then(|r| r.strip_suffix('}'))
                .filter(|r| !r.contains(['$', '{', '}']));
            match reference {
                Some(var) => match env(var) {
                    Some(found) if found.is_empty() => problems.push(invalid(
                        path,
                        format!("environment variable {var} is set but empty"),
                    )),
                    Some(found) => {
                        *s = found;
                        from_env.insert(path.to_string());
                    }
                    None => problems.push(invalid(
                        path,
                        format!("environment variable {var} is not set"),
                    )),
                },
                None if s.contains("${") => problems.push(invalid(
                    path,
                    "only a whole value can come from the environment: write \"${VAR_NAME}\" alone",
                )),
                None if tenant_secret => problems.push(invalid(
                    path,
                    "secrets must come from the environment: write \"${VAR_NAME}\"",
                )),
                None => {}
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                interpolate(v, &child, env, problems, from_env);
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                interpolate(v, &format!("{path}[{i}]"), env, problems, from_env);
            }
        }
        _ => {}
    }
}

/// The `sha256:<hex>` form of an API key, as written in `api_keys`.
pub fn hash_api_key(key: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}
