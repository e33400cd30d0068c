//! The deployment files agree with the binary: they parse, name only flags and environment
//! variables `serve` has, listen where they expose and probe, probe paths the gateway serves, and
//! carry a policy `check-config` accepts.

use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

fn yaml(file: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kyc-gateway"))
}

/// What `kyc-gateway serve --help` says.
fn serve_help() -> String {
    let out = binary().args(["serve", "--help"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The port of a listen address such as `0.0.0.0:8080`.
fn port(listen: &str) -> i64 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
}

#[test]
fn compose_runs_the_gateway_as_the_binary_expects() {
    let doc = &yaml("compose.yaml")[0];
    let gateway = &doc["services"]["gateway"];
    let env = &gateway["environment"];
    let help = serve_help();
    for var in ["KYC_GATEWAY_CONFIG", "KYC_GATEWAY_LISTEN"] {
        assert!(help.contains(var), "serve does not read {var}");
    }
    assert_eq!(str_of(&gateway["command"][0], "command"), "serve");
    let listen = port(str_of(&env["KYC_GATEWAY_LISTEN"], "listen"));
    let published = str_of(&gateway["ports"][0], "ports");
    assert!(published.ends_with(&format!(":{listen}")), "{published}");
    // The policy is mounted where the gateway reads it, from a file that exists here.
    let config = str_of(&env["KYC_GATEWAY_CONFIG"], "config");
    let volume = str_of(&gateway["volumes"][0], "volume");
    let mut parts = volume.split(':');
    let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
    assert_eq!(target, config);
    assert!(deploy(source).exists(), "{source}");
    // Prometheus scrapes the gateway's /metrics on that port.
    let prometheus = &yaml("prometheus.yml")[0]["scrape_configs"][0];
    assert_eq!(
        str_of(&prometheus["metrics_path"], "metrics_path"),
        "/metrics"
    );
    let target = str_of(&prometheus["static_configs"][0]["targets"][0], "target");
    assert_eq!(target, format!("gateway:{listen}"));
    // Every mounted file exists.
    for service in doc["services"].as_hash().unwrap().values() {
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let source = str_of(volume, "volume").split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(deploy(source).exists(), "{source}");
            }
        }
    }
}

/// The PostgreSQL password comes from the environment like every other secret: compose refuses
/// to start without it, and neither compose nor the policy holds one.
#[test]
fn compose_takes_the_postgresql_password_from_the_environment() {
    let doc = &yaml("compose.yaml")[0];
    let password = str_of(
        &doc["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"],
        "POSTGRES_PASSWORD",
    );
    assert_eq!(password, "${POSTGRES_PASSWORD:?set it}");
    let url = str_of(
        &doc["services"]["gateway"]["environment"]["KYC_STORE_URL"],
        "KYC_STORE_URL",
    );
    assert_eq!(
        url,
        "postgres://kyc:${POSTGRES_PASSWORD:?set it}@postgres/kyc"
    );
    let policy = std::fs::read_to_string(deploy("policy.compose.toml")).unwrap();
    let store: toml::Table = toml::from_str(&policy).unwrap();
    assert_eq!(store["store"]["url"].as_str(), Some("${KYC_STORE_URL}"));
    // The policy checks with the store URL from the environment.
    let out = binary()
        .arg("check-config")
        .arg(deploy("policy.compose.toml"))
        .env("KYC_STORE_URL", "postgres://kyc:from-the-env@postgres/kyc")
        .envs([
            ("BETRUST_CLIENT_ID", "id"),
            ("BETRUST_CLIENT_SECRET", "s"),
            ("GU1_API_KEY", "k"),
            ("GU1_WEBHOOK_SECRET", "w"),
            (
                "PAYMENTS_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(!said.contains("from-the-env"), "{said}");
}

#[test]
fn compose_sends_traces_through_the_collector_to_jaeger_and_grafana_reads_prometheus() {
    let doc = &yaml("compose.yaml")[0];
    let services = &doc["services"];
    let env = &services["gateway"]["environment"];
    // The gateway exports OTLP/HTTP to the collector's HTTP receiver...
    let endpoint =
        url::Url::parse(str_of(&env["OTEL_EXPORTER_OTLP_ENDPOINT"], "endpoint")).unwrap();
    let collector_host = endpoint.host_str().unwrap();
    assert!(
        !services[collector_host].is_badvalue(),
        "no {collector_host} service"
    );
    let collector = &yaml("otel-collector.yaml")[0];
    let receiver = str_of(
        &collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "receiver",
    );
    assert_eq!(port(receiver), i64::from(endpoint.port().unwrap()));
    // ...whose trace pipeline takes OTLP in and sends it to the Jaeger service.
    let pipeline = &collector["service"]["pipelines"]["traces"];
    assert_eq!(str_of(&pipeline["receivers"][0], "receiver"), "otlp");
    let exporter = str_of(&pipeline["exporters"][0], "exporter");
    let target = str_of(
        &collector["exporters"][exporter]["endpoint"],
        "exporter endpoint",
    );
    let jaeger = target.split(':').next().unwrap();
    assert!(!services[jaeger].is_badvalue(), "no {jaeger} service");
    let mounted = str_of(&services[collector_host]["volumes"][0], "volume");
    assert!(mounted.starts_with("./otel-collector.yaml:"), "{mounted}");

    // Grafana's datasource is the Prometheus service, under the uid every panel names, and it
    // loads the dashboards from where they are mounted.
    let grafana = &services["grafana"];
    let source = &yaml("grafana/provisioning/datasources/prometheus.yaml")[0]["datasources"][0];
    let url = url::Url::parse(str_of(&source["url"], "datasource url")).unwrap();
    assert!(!services[url.host_str().unwrap()].is_badvalue());
    let uid = str_of(&source["uid"], "uid");
    let mounts: Vec<&str> = grafana["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| str_of(v, "volume"))
        .collect();
    let provider = &yaml("grafana/provisioning/dashboards/kyc-gateway.yaml")[0]["providers"][0];
    let path = str_of(&provider["options"]["path"], "dashboards path");
    assert!(
        mounts.contains(&format!("./grafana/dashboards:{path}:ro").as_str()),
        "{mounts:?}"
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/dashboards/kyc-gateway.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], uid, "{}", panel["title"]);
    }
    // The dashboard shows every series the gateway documents (telemetry.rs; the e2e metrics test
    // checks that each one it queries is exported).
    let documented = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/infra/telemetry.rs"),
    )
    .unwrap();
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    for line in documented.lines().filter(|l| l.starts_with("//! | `kyc_")) {
        let series = line["//! | `".len()..].split('`').next().unwrap();
        assert!(
            exprs.contains(series),
            "the dashboard does not show {series}"
        );
    }
}

#[test]
fn the_kubernetes_manifests_agree_with_the_binary() {
    let docs = yaml("k8s/kyc-gateway.yaml");
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    for kind in [
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ] {
        of_kind(kind);
    }
    let deployment = of_kind("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(str_of(&container["args"][0], "args"), "serve");
    let env: Vec<(&str, &str)> = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|e| (str_of(&e["name"], "name"), str_of(&e["value"], "value")))
        .collect();
    let help = serve_help();
    let value = |name: &str| env.iter().find(|(n, _)| *n == name).unwrap().1;
    for (name, _) in &env {
        if name.starts_with("KYC_GATEWAY_") && *name != "KYC_GATEWAY_LOG_FORMAT" {
            assert!(help.contains(name), "serve does not read {name}");
        }
    }
    let listen = port(value("KYC_GATEWAY_LISTEN"));
    assert_eq!(
        container["ports"][0]["containerPort"].as_i64(),
        Some(listen)
    );
    let config = value("KYC_GATEWAY_CONFIG");
    let mount = str_of(&container["volumeMounts"][0]["mountPath"], "mountPath");
    assert_eq!(config, format!("{mount}/policy.toml"));
    assert_eq!(
        str_of(&pod["volumes"][0]["configMap"]["name"], "configMap"),
        str_of(&of_kind("ConfigMap")["metadata"]["name"], "name")
    );
    // The probes ask what the gateway serves.
    assert_eq!(
        str_of(&container["readinessProbe"]["httpGet"]["path"], "readiness"),
        "/readyz"
    );
    assert_eq!(
        str_of(&container["livenessProbe"]["httpGet"]["path"], "liveness"),
        "/healthz"
    );
    // The policy in the ConfigMap passes check-config with the Secret's variables.
    let policy = str_of(&of_kind("ConfigMap")["data"]["policy.toml"], "policy");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, policy).unwrap();
    let mut check = binary();
    check.arg("check-config").arg(&file);
    for (k, v) in of_kind("Secret")["stringData"].as_hash().unwrap() {
        check.env(str_of(k, "key"), str_of(v, "value"));
    }
    let out = check.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dockerfile_runs_as_a_user_on_the_exposed_port_with_real_flags() {
    let text = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("USER ") && !l.contains("root"))
    );
    let exposed: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmd = text.lines().find(|l| l.starts_with("CMD ")).unwrap();
    let help = serve_help();
    for flag in ["--config", "--listen"] {
        assert!(cmd.contains(flag) && help.contains(flag), "{flag}");
    }
    assert!(cmd.contains(&format!("0.0.0.0:{exposed}")), "{cmd}");
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dockerignore"))
            .unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}

#[tokio::test]
async fn the_probed_and_scraped_paths_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n[server]\noutbound_allow = [\"127.0.0.1\"]\n\
             [providers.p]\nkind = \"gu1\"\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"${{K}}\"\n\
             [tenants.t]\napi_keys = [\"sha256:{}\"]\n[tenants.t.routing]\ndefault = \"p\"\n",
            dir.path().join("d.db").display(),
            "0".repeat(64)
        ),
    )
    .unwrap();
    let mut child = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .env("K", "gk_x")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok);
    let base = lines
        .find_map(|l| {
            l.find("listening on http://")
                .map(|at| l[at + "listening on ".len()..].trim().to_string())
        })
        .expect("the gateway started");
    // Stop reading its log: a gateway whose stderr is closed must still answer.
    drop(lines);
    let statuses = statuses(&base).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(statuses, [200, 200, 200], "/readyz, /healthz, /metrics");
}

/// The statuses of the probed and scraped paths (0 when there was no answer).
async fn statuses(base: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for path in ["/readyz", "/healthz", "/metrics"] {
        let status = reqwest::get(format!("{base}{path}"))
            .await
            .map_or(0, |r| r.status().as_u16());
        out.push(status);
    }
    out
}
