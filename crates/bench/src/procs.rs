//! The child processes: the real gateway binary, the simulators and the bare axum server (the
//! last two are this binary re-executed with a hidden flag).

use crate::load::Error;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The API key of the benchmark tenant (`bench`).
pub const TENANT_KEY: &str = "kyc-bench-tenant-key-0001";
/// The BeTrust client secret the simulator accepts.
pub const BETRUST_SECRET: &str = "kyc-bench-betrust-secret";
/// The gu1 API key the simulator accepts.
pub const GU1_API_KEY: &str = "gk_kyc_bench_key";
/// The gu1 webhook secret.
pub const GU1_WEBHOOK_SECRET: &str = "kyc-bench-gu1-webhook-secret";
/// The BeTrust client id (the simulator's default).
pub const BETRUST_CLIENT_ID: &str = "sandbox-client";
/// The BeTrust company (the simulator's default).
pub const BETRUST_COMPANY: &str = "201";

/// The workspace root, where `cargo build` runs.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// Builds the gateway's release binary (`$CARGO` or `cargo`, honouring `CARGO_TARGET_DIR`) and
/// answers its path, as cargo reports it.
pub fn build_gateway() -> Result<PathBuf, Error> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the gateway: {cargo} build --release -p kyc-gateway --bin kyc-gateway");
    let output = Command::new(&cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "-p",
            "kyc-gateway",
            "--bin",
            "kyc-gateway",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("cargo build of the gateway failed ({})", output.status).into());
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "kyc-gateway"
            && let Some(exe) = message["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    Err("cargo did not report the kyc-gateway executable".into())
}

/// The last lines a child wrote to a stream, kept for error messages; the rest is discarded as
/// it comes, so the pipe never fills.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == 40 {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, joined.
    pub fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Reads `stream` line by line until a line contains `listening on http://`, sends that URL,
/// then keeps draining. After the announcement only every 1,000th line is kept (the access log
/// is long and the harness shares the CPU).
fn drain(stream: impl Read + Send + 'static, tail: Tail, tx: std::sync::mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut line = String::new();
        let mut announced = false;
        let mut n = 0u64;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if !announced && let Some(at) = line.find("listening on http://") {
                let url = line[at + "listening on ".len()..]
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(url);
                announced = true;
            }
            n += 1;
            if !announced || n.is_multiple_of(1000) || line.contains("ERROR") {
                tail.push(line.trim_end().to_owned());
            }
        }
    });
}

fn addr_of(base: &str) -> Result<SocketAddr, Error> {
    Ok(base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()?)
}

/// A gateway process.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it logged lately.
    pub log: Tail,
}

impl Gateway {
    /// Writes the benchmark policy for `store_url` into `dir` and starts `serve` on it.
    pub fn start(
        binary: &Path,
        dir: &Path,
        store_url: &str,
        sims: &Simulators,
    ) -> Result<Gateway, Error> {
        Gateway::start_with(binary, dir, store_url, sims, None)
    }

    /// The same, with the benchmark tenant's events delivered to `webhook_url`, and a second
    /// tenant (`other`) without one.
    pub fn start_delivering(
        binary: &Path,
        dir: &Path,
        store_url: &str,
        sims: &Simulators,
        webhook_url: &str,
    ) -> Result<Gateway, Error> {
        Gateway::start_with(binary, dir, store_url, sims, Some(webhook_url))
    }

    fn start_with(
        binary: &Path,
        dir: &Path,
        store_url: &str,
        sims: &Simulators,
        webhook_url: Option<&str>,
    ) -> Result<Gateway, Error> {
        let config = dir.join(format!("policy-{}.toml", unique()));
        std::fs::write(&config, policy(store_url, sims, webhook_url))?;
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .env("BETRUST_CLIENT_SECRET", BETRUST_SECRET)
            .env("GU1_API_KEY", GU1_API_KEY)
            .env("GU1_WEBHOOK_SECRET", GU1_WEBHOOK_SECRET)
            .env("BENCH_WEBHOOK_SECRET", BENCH_WEBHOOK_SECRET)
            // What an operator runs: the default log level and format, no trace export.
            .env_remove("KYC_GATEWAY_LOG")
            .env_remove("KYC_GATEWAY_LOG_FORMAT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = Tail::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        drain(stdout, log.clone(), tx.clone());
        drain(stderr, log.clone(), tx);
        let Ok(base) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the gateway did not start:\n{}", log.text()).into());
        };
        let addr = addr_of(&base)?;
        Ok(Gateway {
            child,
            base,
            addr,
            log,
        })
    }

    /// The process id, to read its memory and CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in kB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kb(&self) -> Result<u64, Error> {
        rss_kb(self.pid())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of a process, kB.
pub fn rss_kb(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/PID/status".into())
}

/// The CPU time a process has used so far, user and system, in microseconds (`utime` and
/// `stime` of `/proc/PID/stat`, counted in USER_HZ ticks, which Linux fixes at 100 a second).
pub fn cpu_us(pid: u32) -> Result<u64, Error> {
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: the fields start after its last `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> Result<u64, Error> {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| "no utime or stime in /proc/PID/stat".into())
    };
    // After the name: state is field 3 of the man page, utime 14 and stime 15.
    Ok((ticks(14 - 3)? + ticks(15 - 3)?) * 1_000_000 / USER_HZ)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The benchmark tenant's Standard Webhooks secret, for part f.
const BENCH_WEBHOOK_SECRET: &str = "whsec_a3ljLWJlbmNoLXdlYmhvb2stc2lnbmluZy1rZXktMDE=";

/// The benchmark policy: one tenant (`bench`) routed to a BeTrust instance, gu1 for AR, both
/// at the simulators; no tenant or provider rate limit; the reconciler hourly so that its
/// provider reads stay out of the measured windows. With `webhook_url`, the tenant's events go
/// there, and a second tenant (`other`) has none.
fn policy(store_url: &str, sims: &Simulators, webhook_url: Option<&str>) -> String {
    let (webhook, other) = match webhook_url {
        Some(url) => (
            format!("webhook_url = \"{url}\"\nwebhook_secret = \"${{BENCH_WEBHOOK_SECRET}}\"\n"),
            format!(
                "[tenants.other]\napi_keys = [\"{}\"]\n\n[tenants.other.routing]\n\
                 default = \"betrust-cl\"\n",
                kyc_gateway::config::hash_api_key("kyc-bench-other-tenant-key")
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"[server]
outbound_allow = ["127.0.0.1"]

[store]
url = "{store_url}"

[providers.betrust-cl]
kind = "betrust"
auth_base_url = "{betrust}"
api_base_url = "{betrust}/transaction-engine/v1"
client_id = "{BETRUST_CLIENT_ID}"
client_secret = "${{BETRUST_CLIENT_SECRET}}"
company_id = "{BETRUST_COMPANY}"

[providers.gu1]
kind = "gu1"
base_url = "{gu1}"
api_key = "${{GU1_API_KEY}}"
webhook_secret = "${{GU1_WEBHOOK_SECRET}}"

[tenants.bench]
api_keys = ["{key}"]
{webhook}
[tenants.bench.routing]
default = "betrust-cl"
rules = [{{ country = "AR", provider = "gu1" }}]

{other}
[reconciler]
every_seconds = 3600
"#,
        betrust = sims.betrust,
        gu1 = sims.gu1,
        key = kyc_gateway::config::hash_api_key(TENANT_KEY),
    )
}

/// The simulators' child process (`kyc-bench --simulators`).
pub struct Simulators {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The BeTrust simulator's base URL (token endpoint root; the API is under
    /// `/transaction-engine/v1`).
    pub betrust: String,
    /// The gu1 simulator's base URL.
    pub gu1: String,
}

impl Simulators {
    /// The process id, to read its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts them.
    pub fn start() -> Result<Simulators, Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--simulators")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut read = |name: &str| -> Result<String, Error> {
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            line.trim()
                .strip_prefix(name)
                .map(|u| u.trim().to_owned())
                .ok_or_else(|| format!("simulators said {line:?}, expected {name} URL").into())
        };
        let betrust = read("betrust")?;
        let gu1 = read("gu1")?;
        Ok(Simulators {
            child,
            stdin,
            stdout,
            betrust,
            gu1,
        })
    }

    /// Where the BeTrust simulator listens.
    pub fn betrust_addr(&self) -> Result<SocketAddr, Error> {
        addr_of(&self.betrust)
    }

    fn ask(&mut self, command: &str) -> Result<u64, Error> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim().parse()?)
    }

    /// Calls to the BeTrust token endpoint so far.
    pub fn token_requests(&mut self) -> Result<u64, Error> {
        self.ask("token_requests")
    }

    /// BeTrust transactions created so far.
    pub fn transactions(&mut self) -> Result<u64, Error> {
        self.ask("transactions")
    }
}

impl Drop for Simulators {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bare axum server's child process (`kyc-bench --bare-server`).
pub struct Bare {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Bare {
    /// Starts it, answering `body` to `GET /v1/verifications/{id}` with [`TENANT_KEY`].
    pub fn start(dir: &Path, body: &[u8]) -> Result<Bare, Error> {
        let file = dir.join(format!("bare-body-{}.json", unique()));
        std::fs::write(&file, body)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--bare-server")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the bare server said {line:?}").into());
        };
        let addr = addr_of(base)?;
        Ok(Bare { child, addr })
    }

    /// The process id, to read its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
