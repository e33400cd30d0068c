//! The production build (`--no-default-features`): no simulators in it, and a working server.
//! `.ci/run` builds it and names it in `KYC_TEST_SERVER_ONLY_BINARY`.

use crate::harness::*;
use std::process::Command;

fn server_only() -> String {
    std::env::var("KYC_TEST_SERVER_ONLY_BINARY")
        .expect("KYC_TEST_SERVER_ONLY_BINARY names a kyc-gateway built with --no-default-features")
}

#[tokio::test]
#[ignore = "needs KYC_TEST_SERVER_ONLY_BINARY (a --no-default-features build); .ci/run builds it"]
async fn a_build_without_the_sandbox_feature_has_no_simulators_and_serves() {
    let binary = server_only();
    let help = Command::new(&binary).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(
        help.contains("serve") && help.contains("check-config"),
        "{help}"
    );
    assert!(
        !help.contains("sandbox"),
        "the help offers a sandbox:\n{help}"
    );
    let sandbox = Command::new(&binary).arg("sandbox").output().unwrap();
    assert!(!sandbox.status.success());
    assert!(String::from_utf8_lossy(&sandbox.stderr).contains("unrecognized subcommand"));
    // With no command there is nothing to start: the help, and a failure.
    let bare = Command::new(&binary).output().unwrap();
    assert_eq!(bare.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bare.stdout).contains("Usage"));

    // The same binary serves a policy: a verification created, finished and read back.
    let w = World::start_with(Options {
        binary: Some(binary),
        ..Default::default()
    })
    .await;
    let v = w.create(person("srv-only-1", "sub-srv-only", "CL")).await;
    assert_eq!(v["provider"], "betrust-cl");
    w.finish(&v, kyc_sandbox::Outcome::Approved).await;
    w.wait_status(&v, ALPHA_KEY, "approved").await;
}

/// This build (default features) has the sandbox: the check above can tell the two apart.
#[test]
fn the_default_build_offers_the_sandbox() {
    let help = Command::new(binary()).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("sandbox"));
}
