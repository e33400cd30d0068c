//! The `kyc-gateway` command line. With no arguments it starts the sandbox (in a build with the
//! `sandbox` feature, the default; a production build has no sandbox and prints its help).

use clap::{Parser, Subcommand};
use kyc_gateway::config::{Policy, hash_api_key};
use std::process::ExitCode;

/// One normalized KYC API in front of several identity-verification providers.
#[derive(Parser)]
#[command(name = "kyc-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a policy file.
    Serve {
        /// The policy file (TOML); it is watched and reloaded live.
        #[arg(long, env = "KYC_GATEWAY_CONFIG")]
        config: String,
        /// Address to listen on.
        #[arg(long, env = "KYC_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Validate a policy file without starting the server: every error, then every warning.
    CheckConfig {
        /// The policy file (TOML).
        file: String,
        /// Refuse warnings too (exit 1).
        #[arg(long)]
        strict: bool,
    },
    /// Print each provider instance's webhook URL, to register at a provider that takes one
    /// destination per account (Didit's console). Its secrets must be in the environment.
    Hooks {
        /// The policy file (TOML).
        #[arg(long)]
        config: String,
        /// The gateway's public base URL; default the policy's `server.public_url`.
        #[arg(long)]
        base: Option<String>,
    },
    /// Print the `sha256:<hex>` form of an API key, for a tenant's `api_keys`.
    HashKey {
        /// The API key.
        key: String,
    },
    #[cfg(feature = "sandbox")]
    /// Start the sandbox: both provider simulators in-process, a SQLite file, a demo tenant, or
    /// your own policy's tenants and routing pointed at the simulators.
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Your policy file: its instances talk to the simulators, its tenants get sandbox keys.
        #[arg(long)]
        config: Option<String>,
        /// Start with two weeks of generated history and an experiment, the two simulated
        /// providers differing in approval rate, time to decision and errors.
        #[arg(long, conflicts_with = "config")]
        scenario: bool,
    },
    /// Print the OpenAPI document the gateway serves (kept in openapi/openapi.json).
    Openapi,
    /// Replay a tenant's stored verifications through a draft policy's routing, calling no
    /// provider: how many would move from each instance to each other, per country.
    Replay {
        /// The draft policy file (TOML); its store is the one read.
        #[arg(long)]
        config: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// How far back: days, as `30d`.
        #[arg(long, default_value = "30d")]
        since: String,
        /// Print JSON (the shape of `POST /v1/policy/preview`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The tamper-evident history: check each tenant's hash chain, or export a period.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print which provider instance a create would go to under a policy, and why.
    Explain {
        /// The policy file (TOML).
        #[arg(long)]
        config: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The subject's country (ISO 3166-1 alpha-2).
        #[arg(long)]
        country: String,
        /// The subject id (a split picks by it).
        #[arg(long)]
        subject: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every tenant's hash chain (or one's) in the policy's store: exit 0 when each leads
    /// unbroken to its head, 1 naming the first row that breaks one.
    Verify {
        /// The policy file (TOML); its store is the one read.
        #[arg(long)]
        config: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Print a tenant's history of a period as JSON Lines, as `GET /v1/audit/export` answers.
    Export {
        /// The policy file (TOML); its store is the one read.
        #[arg(long)]
        config: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Start (RFC 3339), included.
        #[arg(long)]
        from: String,
        /// End (RFC 3339), excluded; default now.
        #[arg(long)]
        to: Option<String>,
    },
}

/// `explain`; where the tenant's adaptive routing takes the country, with its shares and the
/// subject's earlier instance read from the policy's store, as the gateway reads them.
async fn explain_command(
    config: &str,
    tenant: &str,
    country: &str,
    subject: Option<&str>,
) -> Result<String, String> {
    let policy = Policy::load(config).map_err(|e| e.to_string())?;
    let optimize = policy
        .tenants
        .get(tenant)
        .and_then(|t| t.routing.optimize.clone())
        .filter(|o| o.covers(country));
    let Some(optimize) = optimize else {
        return explain(&policy, tenant, country, subject, None);
    };
    let store = kyc_gateway::store::SqlStore::connect_with(&policy.store)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let now = kyc_gateway::store::now();
    let allocation =
        kyc_gateway::analytics::optimize::allocate(&store, &policy, tenant, &optimize, now)
            .await
            .map_err(|e| format!("store: {e}"))?;
    let before = match subject {
        Some(subject) => {
            use kyc_gateway::store::SubjectStore;
            let latest = store
                .subject_latest(tenant, subject)
                .await
                .map_err(|e| format!("store: {e}"))?;
            latest
                .filter(|v| {
                    v.routing
                        .as_ref()
                        .is_some_and(|r| r.reason == kyc_core::RoutingReason::Optimize)
                })
                .map(|v| v.provider)
        }
        None => None,
    };
    let shares = allocation.shares;
    let live = kyc_gateway::providers::routing::Live {
        experiment_stopped: false,
        shares: Some(&shares),
        optimized_before: before.as_deref(),
    };
    explain(&policy, tenant, country, subject, Some(live))
}

/// The text of `explain`: where a create for `tenant` in `country` (for `subject`) goes, and why.
fn explain(
    policy: &Policy,
    tenant: &str,
    country: &str,
    subject: Option<&str>,
    live: Option<kyc_gateway::providers::routing::Live<'_>>,
) -> Result<String, String> {
    let config = policy
        .tenants
        .get(tenant)
        .ok_or_else(|| "no tenant of that name in the policy".to_string())?;
    if !kyc_gateway::config::country_codes().contains(&country) {
        return Err("--country must be an assigned ISO 3166-1 alpha-2 code, upper case".into());
    }
    let routing = &config.routing;
    let by_rule = routing.rules.iter().any(|r| r.country == country);
    let in_experiment = routing
        .experiment
        .as_ref()
        .is_some_and(|e| e.covers(country));
    let optimized = !in_experiment && routing.optimize.as_ref().is_some_and(|o| o.covers(country));
    if (in_experiment || optimized || !by_rule && !routing.split.is_empty()) && subject.is_none() {
        return Err(format!(
            "tenant {tenant} splits by subject: pass --subject to see where one subject goes"
        ));
    }
    let route = kyc_gateway::providers::routing::candidates(
        routing,
        tenant,
        subject.unwrap_or(""),
        country,
        None,
        |n| policy.providers.contains_key(n),
        // The policy alone does not say whether a guardrail has stopped the experiment.
        live.unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    let why = match route.reason {
        kyc_core::RoutingReason::Rule => format!("the country rule for {country}"),
        kyc_core::RoutingReason::Split => "the weighted split, sticky per subject".into(),
        kyc_core::RoutingReason::Default => "the tenant's default".into(),
        kyc_core::RoutingReason::Experiment => match &route.experiment {
            Some((name, arm)) => format!(
                "experiment {name}, {} arm, unless its guardrail has stopped it",
                arm.as_str()
            ),
            None => "an experiment".into(),
        },
        kyc_core::RoutingReason::Optimize => {
            let shares = route.shares.iter().flatten();
            let shares: Vec<String> = shares.map(|(n, s)| format!("{n} {s:.1} %")).collect();
            let before = live.and_then(|l| l.optimized_before);
            format!(
                "adaptive routing by approvals per cost; shares now: {}; {}",
                shares.join(", "),
                match before {
                    Some(_) => "this subject went there before and stays",
                    None => "a new subject is drawn by the shares",
                }
            )
        }
        other => format!("{other:?}"),
    };
    let reason = serde_json::to_value(route.reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let fallback = if route.candidates.len() > 1 {
        route.candidates[1..].join(", ")
    } else {
        "none".into()
    };
    Ok(format!(
        "provider: {}\nreason: {reason} ({why})\nfallback: {fallback}\n",
        route.candidates[0]
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashKey { key }) => {
            println!("{}", hash_api_key(&key));
            ExitCode::SUCCESS
        }
        Some(Command::Explain {
            config,
            tenant,
            country,
            subject,
        }) => printed(
            &config,
            explain_command(&config, &tenant, &country, subject.as_deref()).await,
        ),
        Some(Command::Replay {
            config,
            tenant,
            since,
            json,
        }) => printed(&config, replay(&config, &tenant, &since, json).await),
        Some(Command::Audit { command }) => audit(command).await,
        Some(Command::Hooks { config, base }) => printed(&config, hooks(&config, base)),
        Some(Command::Openapi) => {
            print!("{}", kyc_gateway::http::openapi::document_json());
            ExitCode::SUCCESS
        }
        Some(Command::CheckConfig { file, strict }) => check_config(&file, strict),
        Some(Command::Serve { config, listen }) => {
            let _telemetry = kyc_gateway::infra::telemetry::init();
            let policy = match Policy::load(&config) {
                Ok(policy) => policy,
                Err(e) => {
                    tracing::error!("{config}: {e}");
                    return ExitCode::from(2);
                }
            };
            finish(
                kyc_gateway::http::server::serve(policy, Some(config.into()), &listen, |_| {})
                    .await,
            )
        }
        #[cfg(feature = "sandbox")]
        Some(Command::Sandbox {
            listen,
            config,
            scenario,
        }) => {
            let _telemetry = kyc_gateway::infra::telemetry::init();
            finish(kyc_gateway::devtools::sandbox::run(&listen, config.as_deref(), scenario).await)
        }
        #[cfg(feature = "sandbox")]
        None => {
            let _telemetry = kyc_gateway::infra::telemetry::init();
            finish(kyc_gateway::devtools::sandbox::run("127.0.0.1:8080", None, false).await)
        }
        // A build without the simulators has nothing to start without a policy.
        #[cfg(not(feature = "sandbox"))]
        None => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            ExitCode::from(2)
        }
    }
}

/// A command's answer on stdout (exit 0), or its error on stderr after the policy file's name
/// (exit 2).
fn printed(config: &str, answer: Result<String, String>) -> ExitCode {
    match answer {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{config}: {e}");
            ExitCode::from(2)
        }
    }
}

/// `hooks`: a line per provider instance, `NAME KIND URL`.
fn hooks(config: &str, base: Option<String>) -> Result<String, String> {
    let policy = Policy::load(config).map_err(|e| e.to_string())?;
    let base = base
        .or_else(|| policy.server.public_url.clone())
        .ok_or("server.public_url is not set: pass --base with the gateway's public URL")?;
    let url = url::Url::parse(&base).map_err(|_| "--base is not a URL".to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("--base is not an http(s) URL".into());
    }
    let lines = kyc_gateway::app::hook_urls(&policy, &base);
    Ok(lines
        .into_iter()
        .map(|(name, kind, url)| format!("{name}\t{kind}\t{url}\n"))
        .collect())
}

/// `replay`: the draft's routing for `tenant` over its verifications of the last `since` (`30d`).
async fn replay(config: &str, tenant: &str, since: &str, json: bool) -> Result<String, String> {
    let days: u32 = since
        .strip_suffix('d')
        .and_then(|d| d.parse().ok())
        .filter(|d| (1..=3660).contains(d))
        .ok_or("--since must be a number of days from 1 to 3660, as 30d")?;
    let policy = Policy::load(config).map_err(|e| e.to_string())?;
    let draft = &policy
        .tenants
        .get(tenant)
        .ok_or("no tenant of that name in the policy")?
        .routing;
    let store = kyc_gateway::store::SqlStore::connect_with(&policy.store)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let until = kyc_gateway::store::now();
    let since = until - chrono::Duration::days(i64::from(days));
    let preview =
        kyc_gateway::analytics::replay::preview(&store, &policy, tenant, draft, since, until)
            .await
            .map_err(|e| format!("store: {e}"))?;
    if json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&preview).expect("serializes")
        ));
    }
    Ok(kyc_gateway::analytics::replay::table(&preview))
}

/// `audit verify` and `audit export`.
async fn audit(command: AuditCommand) -> ExitCode {
    let config = match &command {
        AuditCommand::Verify { config, .. } | AuditCommand::Export { config, .. } => config.clone(),
    };
    let policy = match Policy::load(&config) {
        Ok(policy) => policy,
        Err(e) => return printed(&config, Err(e.to_string())),
    };
    let store = match kyc_gateway::store::SqlStore::connect_with(&policy.store).await {
        Ok(store) => std::sync::Arc::new(store) as std::sync::Arc<dyn kyc_gateway::store::Store>,
        Err(e) => return printed(&config, Err(format!("store: {e}"))),
    };
    match command {
        AuditCommand::Verify { tenant, .. } => {
            let tenants: Vec<String> = match tenant {
                Some(tenant) => vec![tenant],
                None => policy.tenants.keys().cloned().collect(),
            };
            audit_verify(store.as_ref(), &tenants).await
        }
        AuditCommand::Export {
            tenant, from, to, ..
        } => {
            let params = kyc_gateway::http::input::AuditExportParams {
                from: Some(from),
                to,
            };
            match params.check(chrono::Utc::now()) {
                Ok((from, to)) => audit_export(store, tenant, from, to).await,
                Err(e) => printed(&config, Err(e.to_string())),
            }
        }
    }
}

/// Checks each tenant's chain; exit 1 at the first broken one, 2 when the store fails.
async fn audit_verify(store: &dyn kyc_gateway::store::Store, tenants: &[String]) -> ExitCode {
    for tenant in tenants {
        match kyc_gateway::lifecycle::audit::verify(store, tenant).await {
            Ok(check) => match check.broken {
                Some(broken) => {
                    eprintln!("tenant {tenant}: chain broken at {broken}");
                    return ExitCode::from(1);
                }
                None => println!(
                    "tenant {tenant}: {} rows chained, unbroken, ending at {:?}; {} not sealed yet",
                    check.rows, check.hash, check.unsealed
                ),
            },
            Err(e) => {
                eprintln!("tenant {tenant}: store: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Writes the export to stdout as it is read.
async fn audit_export(
    store: std::sync::Arc<dyn kyc_gateway::store::Store>,
    tenant: String,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> ExitCode {
    use futures_util::TryStreamExt;
    use std::io::Write;
    let mut lines = std::pin::pin!(kyc_gateway::lifecycle::audit::export(
        store, tenant, from, to
    ));
    let mut out = std::io::stdout().lock();
    loop {
        match lines.try_next().await {
            Ok(Some(chunk)) => {
                if out.write_all(chunk.as_bytes()).is_err() {
                    return ExitCode::from(2);
                }
            }
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("store: {e}");
                return ExitCode::from(2);
            }
        }
    }
}

/// `check-config`: every error (exit 2), then every warning (exit 1 with `--strict`), each on a
/// line naming its key; exit 0 otherwise.
fn check_config(file: &str, strict: bool) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{file}: cannot read it: {e}");
            return ExitCode::from(2);
        }
    };
    let policy = match Policy::parse_all(&text, |name| std::env::var(name).ok()) {
        Ok(policy) => policy,
        Err(errors) => {
            for e in errors {
                eprintln!("{file}: {e}");
            }
            return ExitCode::from(2);
        }
    };
    // The adapters check their own settings (and the outbound rule) when an instance is built.
    let errors = kyc_gateway::app::Runtime::instance_problems(&policy);
    for e in &errors {
        eprintln!("{file}: {e}");
    }
    if !errors.is_empty() {
        return ExitCode::from(2);
    }
    let warnings = policy.warnings();
    for w in &warnings {
        eprintln!("{file}: warning: {w}");
    }
    if strict && !warnings.is_empty() {
        return ExitCode::from(1);
    }
    println!(
        "{file}: ok ({} providers, {} tenants)",
        policy.providers.len(),
        policy.tenants.len()
    );
    ExitCode::SUCCESS
}

fn finish(result: Result<(), kyc_gateway::http::server::ServeError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
