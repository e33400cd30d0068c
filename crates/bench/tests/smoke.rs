//! The harness runs end to end with tiny durations and sizes (`--smoke`) and writes a JSON whose
//! figures carry numbers. No timing is asserted: the targets live in the harness's own output.

use std::path::PathBuf;
use std::process::Command;

/// The debug gateway binary beside this package's binary, built if missing (`cargo test
/// --workspace` builds it for the e2e tests; `cargo test -p kyc-bench` alone does not).
fn gateway_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_kyc-bench"));
    let gateway = bench.with_file_name("kyc-gateway");
    if !gateway.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .args(["build", "-p", "kyc-gateway", "--bin", "kyc-gateway"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the gateway failed");
    }
    assert!(
        gateway.exists(),
        "no gateway binary at {}",
        gateway.display()
    );
    gateway
}

#[test]
fn the_harness_runs_every_part_and_writes_figures_with_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_kyc-bench"))
        .arg("--smoke")
        .arg("--gateway")
        .arg(gateway_binary())
        .args(["--postgres", "none", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the harness failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let figures = report["figures"].as_array().unwrap();
    for part in ["a", "b", "c", "d", "e"] {
        let measured: Vec<_> = figures
            .iter()
            .filter(|f| f["part"] == part && f["verdict"] != "skipped")
            .collect();
        assert!(!measured.is_empty(), "no figure of part {part}: {report}");
        for figure in measured {
            assert!(figure["value"].is_f64(), "no number: {figure}");
            assert!(
                ["ok", "MISS", "info"].contains(&figure["verdict"].as_str().unwrap()),
                "{figure}"
            );
            // A figure shown in the table is in the JSON and the other way round.
            assert!(
                stdout.contains(figure["name"].as_str().unwrap()),
                "{stdout}"
            );
        }
    }
    // Every load cell says how much CPU its serving process used per request, and the CPU
    // figures of parts a and b are in the table.
    let cells: Vec<_> = report["cells"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, cell)| cell.get("rps").is_some())
        .collect();
    assert!(cells.len() > 10, "{report}");
    for (name, cell) in cells {
        let cpu = cell["cpu_us_per_request"].as_f64();
        assert!(cpu.is_some_and(|c| c >= 0.0), "{name}: {cell}");
    }
    for name in ["CPU per request, gateway/bare", "gateway CPU per create"] {
        assert!(stdout.contains(name), "{stdout}");
    }
    // Without PostgreSQL its figures say so, with no number.
    let skipped: Vec<_> = figures
        .iter()
        .filter(|f| f["verdict"] == "skipped")
        .collect();
    assert!(!skipped.is_empty());
    assert!(skipped.iter().all(|f| f["value"].is_null()));
    assert!(stdout.contains("skipped: --postgres none"), "{stdout}");
    // One fresh gateway's concurrent creates fetched one token.
    let tokens = figures
        .iter()
        .find(|f| f["part"] == "c")
        .expect("part c figure");
    assert_eq!(tokens["value"], 1.0, "{tokens}");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
}
