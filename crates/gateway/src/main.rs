//! The `kyc-gateway` command line. With no arguments it starts the sandbox.

use clap::{Parser, Subcommand};
use kyc_gateway::policy::{Policy, hash_api_key};
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
        /// The policy file (TOML).
        #[arg(long)]
        config: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Validate a policy file without starting the server.
    CheckConfig {
        /// The policy file (TOML).
        file: String,
    },
    /// Print the `sha256:<hex>` form of an API key, for a tenant's `api_keys`.
    HashKey {
        /// The API key.
        key: String,
    },
    /// Start the sandbox: both provider simulators in-process, a SQLite file, a demo tenant.
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Print the OpenAPI document the gateway serves (kept in openapi/openapi.json).
    Openapi,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KYC_GATEWAY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,reqwest=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("KYC_GATEWAY_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashKey { key }) => {
            println!("{}", hash_api_key(&key));
            ExitCode::SUCCESS
        }
        Some(Command::Openapi) => {
            print!("{}", kyc_gateway::openapi::document_json());
            ExitCode::SUCCESS
        }
        // The adapters check their own settings when an instance is built.
        Some(Command::CheckConfig { file }) => match Policy::load(&file)
            .and_then(|p| kyc_gateway::app::Runtime::build(p.clone()).map(|_| p))
        {
            Ok(policy) => {
                println!(
                    "{file}: ok ({} providers, {} tenants)",
                    policy.providers.len(),
                    policy.tenants.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{file}: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Serve { config, listen }) => {
            init_logging();
            let policy = match Policy::load(&config) {
                Ok(policy) => policy,
                Err(e) => {
                    tracing::error!("{config}: {e}");
                    return ExitCode::from(2);
                }
            };
            finish(kyc_gateway::server::serve(policy, Some(config.into()), &listen, |_| {}).await)
        }
        Some(Command::Sandbox { listen }) => {
            init_logging();
            finish(kyc_gateway::sandbox::run(&listen).await)
        }
        None => {
            init_logging();
            finish(kyc_gateway::sandbox::run("127.0.0.1:8080").await)
        }
    }
}

fn finish(result: Result<(), kyc_gateway::server::ServeError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
