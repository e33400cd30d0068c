//! What an operator meets: the flags can come from the environment, and logs written to a pipe
//! or file carry no colour codes.

use crate::harness::binary;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn serve_takes_its_config_and_listen_address_from_the_environment_and_logs_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
[server]
outbound_allow = ["127.0.0.1"]
[store]
url = "sqlite://{db}"
[providers.p]
kind = "gu1"
base_url = "http://127.0.0.1:9"
api_key = "${{OPS_KEY}}"
[tenants.t]
api_keys = ["{hash}"]
[tenants.t.routing]
default = "p"
"#,
            db = dir.path().join("ops.db").display(),
            hash = kyc_gateway::config::hash_api_key("ops-tenant-key"),
        ),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .arg("serve")
        .env("KYC_GATEWAY_CONFIG", &policy)
        .env("KYC_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("OPS_KEY", "gk_ops")
        .env_remove("NO_COLOR")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let base = loop {
        let line = lines.next().expect("the gateway exited").unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on ".len()..].trim().to_string();
        }
    };
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !seen.contains('\u{1b}'),
        "colour codes in a piped log:\n{seen:?}"
    );

    let help = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("KYC_GATEWAY_CONFIG"), "{help}");
    assert!(help.contains("KYC_GATEWAY_LISTEN"), "{help}");
}

#[tokio::test]
async fn request_ids_are_kept_when_usable_and_answers_are_compressed_when_asked() {
    use crate::harness::{ALPHA_KEY, World};
    use std::io::Read;
    let w = World::start().await;
    let list = format!("{}/v1/verifications", w.base);
    let get = |id: &str| {
        w.http
            .get(format!("{}/v1/verifications/ver_missing", w.base))
            .bearer_auth(ALPHA_KEY)
            .header("x-request-id", id)
            .send()
    };

    // A usable caller id is the request's id: on the answer and in the problem.
    let answer = get("trace-me_01").await.unwrap();
    assert_eq!(answer.headers()["x-request-id"], "trace-me_01");
    let problem: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(problem["request_id"], "trace-me_01");
    // One that is too long or could forge log lines is replaced, not echoed.
    for hostile in ["a".repeat(65), "x\" level=ERROR".into(), String::new()] {
        let answer = get(&hostile).await.unwrap();
        let id = answer.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(id.starts_with("req_"), "{hostile:?} -> {id}");
        let problem: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(problem["request_id"], id.as_str());
    }

    // gzip when the caller accepts it (and the answer is over 32 bytes), and only then.
    for n in 0..3 {
        let reference = format!("gzip-{n}");
        let created = w
            .http
            .post(&list)
            .bearer_auth(ALPHA_KEY)
            .json(&crate::harness::person(&reference, &reference, "CL"))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let plain = w
        .http
        .get(&list)
        .bearer_auth(ALPHA_KEY)
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    let zipped = w
        .http
        .get(&list)
        .bearer_auth(ALPHA_KEY)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.status(), 200);
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped.bytes().await.unwrap()[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
}

/// The access log: a read that succeeded logs at DEBUG, so a busy gateway's log is not mostly
/// reads; a refused read and any write log at INFO (the default level). `KYC_GATEWAY_LOG=debug`
/// shows them all.
#[tokio::test]
async fn successful_reads_log_at_debug_and_every_other_answer_at_info() {
    use crate::harness::{ALPHA_KEY, Options, World};
    for (filter, reads_shown) in [("info", false), ("debug", true)] {
        let env = vec![
            ("KYC_GATEWAY_LOG_FORMAT".to_string(), "json".to_string()),
            ("KYC_GATEWAY_LOG".to_string(), filter.to_string()),
        ];
        let w = World::start_with(Options {
            env,
            ..Default::default()
        })
        .await;
        let send = |method: reqwest::Method, path: &str, id: &str| {
            w.http
                .request(method, format!("{}{path}", w.base))
                .bearer_auth(ALPHA_KEY)
                .header("x-request-id", id)
                .json(&crate::harness::person(id, id, "CL"))
                .send()
        };
        let read = send(reqwest::Method::GET, "/v1/policy", "read-ok")
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        let missing = send(reqwest::Method::GET, "/v1/verifications/ver_x", "read-404")
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        let created = send(reqwest::Method::POST, "/v1/verifications", "write-201")
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = w.log();
        let served = |id: &str| {
            log.lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|line| line["fields"]["message"] == "request served")
                .filter(|line| line["span"]["request_id"] == id)
                .count()
        };
        assert_eq!(
            served("read-ok"),
            usize::from(reads_shown),
            "{filter}: {log}"
        );
        assert_eq!(served("read-404"), 1, "{filter}: {log}");
        assert_eq!(served("write-201"), 1, "{filter}: {log}");
    }
}
