//! `check-config` finds everything that can be found offline, all in one run, each problem on a
//! line naming its key; warnings are printed, and refused with `--strict`.

use crate::harness::binary;
use std::process::Output;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/policy.example.toml"
);

/// Runs `check-config` on the pinned example with `edits` applied (each `from` must be there),
/// with the environment its `${VAR}`s need; answers the exit code and what it printed to stderr.
pub fn check(edits: &[(&str, &str)], extra: &[&str]) -> (Option<i32>, String) {
    let mut text = std::fs::read_to_string(EXAMPLE).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from}");
        text = text.replacen(from, to, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, text).unwrap();
    let out: Output = std::process::Command::new(binary())
        .arg("check-config")
        .arg(&file)
        .args(extra)
        .env("BETRUST_CLIENT_ID", "id")
        .env("BETRUST_CLIENT_SECRET", "s")
        .env("GU1_API_KEY", "k")
        .env("GU1_WEBHOOK_SECRET", "w")
        .env("DIDIT_API_KEY", "d")
        .env("DIDIT_WEBHOOK_SECRET", "dw")
        .env(
            "PAYMENTS_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .env("EMPTY_VAR", "")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_problem_is_reported_in_one_run_each_naming_its_key() {
    let (code, stderr) = check(
        &[
            // A rule that can never match.
            (
                "rules = [{ country = \"AR\", provider = \"gu1\" }]",
                "rules = [{ country = \"AR\", provider = \"gu1\" }, { country = \"AR\", provider = \"betrust-cl\" }]",
            ),
            // An unknown fallback, and a zero limit.
            ("fallback = [\"gu1\"]", "fallback = [\"nope\"]"),
            (
                "rate_limit = { per_second = 50, burst = 100 }",
                "rate_limit = { per_second = 0, burst = 100 }\n\
                 webhook_rate_limit = { per_second = 100000 }\n\
                 verification_valid_days = 100000000\n\
                 reverification_notice_days = 100000000",
            ),
            ("retention_days = 1825", "retention_days = 0"),
            // A lookup grace past a day, and a circuit that would stay open for ever.
            (
                "company_id = \"201\"",
                "company_id = \"201\"\nlookup_grace_seconds = 86401\n\
                 circuit_breaker = { failures = 2, open_seconds = 9223372036854775807 }",
            ),
            // The reconciler's schedule and share out of range.
            (
                "every_seconds = 60 ",
                "every_seconds = 60\nmax_interval_seconds = 0\nrate_limit_share = 101\n\
                 lapse_margin_seconds = 99999999\n\n[compliance]\nevery_seconds = 0\n",
            ),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    for key in [
        "tenants.payments.routing.rules[1].country: can never match",
        "tenants.payments.routing.fallback[0]:",
        "tenants.payments.rate_limit:",
        "tenants.payments.webhook_rate_limit.per_second: must be from 1 to 10000",
        "providers.betrust-cl.lookup_grace_seconds: must be from 1 to 86400",
        "providers.betrust-cl.circuit_breaker.open_seconds: must be from 1 to 86400",
        "tenants.payments.verification_valid_days: must be from 1 to 36500",
        "tenants.payments.reverification_notice_days: must be fewer days than verification_valid_days",
        "compliance.every_seconds: must be from 1 to 86400",
        "tenants.payments.retention_days: must be from 1 to 36500",
        "reconciler.max_interval_seconds: must be from 1 to 604800",
        "reconciler.rate_limit_share: must be a percentage from 1 to 100",
        "reconciler.lapse_margin_seconds: must be from 0 to 604800",
    ] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
}

#[test]
fn whatever_serve_would_refuse_of_the_providers_is_refused_too() {
    let (code, stderr) = check(
        &[
            (
                "company_id = \"201\"",
                "company_id = \"201\"\ntimeout_ms = 0",
            ),
            (
                "base_url = \"https://api.gu1.ai\"",
                "base_url = \"https://169.254.169.254\"",
            ),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("providers.betrust-cl:"), "{stderr}");
    assert!(stderr.contains("providers.gu1:"), "{stderr}");
}

#[test]
fn a_syntax_error_names_its_line_and_column() {
    let (code, stderr) = check(&[("[reconciler]", "[reconciler\nx = 1")], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    let line = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("[reconciler]"))
        .unwrap()
        + 1;
    assert!(stderr.contains(&format!("line {line}, column")), "{stderr}");
}

#[test]
fn environment_values_are_whole_and_not_empty() {
    let (code, stderr) = check(
        &[
            ("\"${GU1_API_KEY}\"", "\"${EMPTY_VAR}\""),
            (
                "\"${BETRUST_CLIENT_ID}\"",
                "\"${BETRUST_CLIENT_ID}-suffix\"",
            ),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("providers.gu1.api_key: environment variable EMPTY_VAR is set but empty"),
        "{stderr}"
    );
    assert!(
        stderr.contains("providers.betrust-cl.client_id: only a whole value"),
        "{stderr}"
    );
}

#[test]
fn a_key_shared_by_two_tenants_is_refused() {
    let hash = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let other = format!(
        "[tenants.other]\napi_keys = [\"{hash}\"]\n\n[tenants.other.routing]\ndefault = \"gu1\"\n\n[reconciler]"
    );
    let (code, stderr) = check(&[("[reconciler]", &other)], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("tenants.payments.api_keys[0]: the same key as tenants.other.api_keys[0]"),
        "{stderr}"
    );
}

#[test]
fn warnings_are_printed_and_refused_only_when_strict() {
    // The pinned example sets a default beside a split on purpose; add an unused instance.
    let unused =
        "[providers.spare]\nkind = \"gu1\"\napi_key = \"${GU1_API_KEY}\"\n\n[tenants.payments]";
    let edits = [("[tenants.payments]", unused)];
    let (code, stderr) = check(&edits, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: tenants.payments.routing.default: is never used"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: providers.spare: no tenant routes to it"),
        "{stderr}"
    );
    let (code, _) = check(&edits, &["--strict"]);
    assert_eq!(code, Some(1));
}

/// A key table with a field the gateway does not know is refused naming it, never served as a
/// key with other rights than written.
#[test]
fn an_unknown_field_in_a_key_table_is_refused_naming_it() {
    let (code, stderr) = check(
        &[(
            "expires_at = \"2027-06-30T00:00:00Z\" }",
            "expires_at = \"2027-06-30T00:00:00Z\", scopes = \"read\" }",
        )],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("tenants.payments.api_keys[1].scopes: unknown field"),
        "{stderr}"
    );
}

/// A tenant `webhook_url` at a non-public address is refused by `check-config` naming the key,
/// in each form: the cloud metadata address, and the same inside IPv6; as is plain http.
#[test]
fn a_webhook_url_at_a_non_public_address_is_refused() {
    for url in [
        "https://169.254.169.254/latest",
        "https://[::ffff:169.254.169.254]/latest",
        "https://127.0.0.2/kyc-events",
        "http://payments.internal.example/kyc-events",
    ] {
        let (code, stderr) = check(
            &[(
                "webhook_url = \"https://payments.internal.example/kyc-events\"",
                &format!("webhook_url = \"{url}\""),
            )],
            &[],
        );
        assert_eq!(code, Some(2), "{url}: {stderr}");
        assert!(
            stderr.contains("tenants.payments.webhook_url: is refused"),
            "{url}: {stderr}"
        );
        assert!(
            !stderr.contains("169.254"),
            "the address is not echoed: {stderr}"
        );
    }
}

/// Every inline table of the policy, and every section, refuses a field it does not know,
/// naming it (one run each: the first unknown field stops the parse).
#[test]
fn an_unknown_field_in_any_table_is_refused_naming_it() {
    let rate = "rate_limit = { per_second = 20, burst = 40 }";
    let price = "price_per_verification = { amount = 1.20, currency = \"USD\" }";
    let tenant_rate = "rate_limit = { per_second = 50, burst = 100 }";
    let rule = "rules = [{ country = \"AR\", provider = \"gu1\" }]";
    let experiment = "guardrail_pp = 10 }";
    let cases: &[(&str, String, &str)] = &[
        (
            rate,
            "rate_limit = { per_second = 20, burst = 40, bogus = 1 }".into(),
            "providers.betrust-cl.rate_limit.bogus",
        ),
        (
            rate,
            format!("{rate}\ncircuit_breaker = {{ failures = 3, open_seconds = 30, bogus = 1 }}"),
            "providers.betrust-cl.circuit_breaker.bogus",
        ),
        (
            price,
            "price_per_verification = { amount = 1.20, currency = \"USD\", bogus = 1 }".into(),
            "providers.gu1.price_per_verification.bogus",
        ),
        (
            "company_id = \"201\"",
            "company_id = \"201\"\nbogus = 1".into(),
            "providers.betrust-cl.bogus",
        ),
        (
            tenant_rate,
            "rate_limit = { per_second = 50, burst = 100, bogus = 1 }".into(),
            "tenants.payments.rate_limit.bogus",
        ),
        (
            tenant_rate,
            format!("{tenant_rate}\nwebhook_rate_limit = {{ per_second = 5, bogus = 1 }}"),
            "tenants.payments.webhook_rate_limit.bogus",
        ),
        (
            rule,
            "rules = [{ country = \"AR\", provider = \"gu1\", bogus = 1 }]".into(),
            "tenants.payments.routing.rules[0].bogus",
        ),
        (
            experiment,
            "guardrail_pp = 10, bogus = 1 }".into(),
            "tenants.payments.routing.experiment.bogus",
        ),
        (
            "allow_override = false",
            "allow_override = false\nbogus = 1".into(),
            "tenants.payments.routing.bogus",
        ),
        (
            "[reconciler]",
            "[reconciler]\nbogus = 1".into(),
            "reconciler.bogus",
        ),
        ("[store]", "[store]\nbogus = 1".into(), "store.bogus"),
        ("[server]", "[server]\nbogus = 1".into(), "server.bogus"),
    ];
    for (from, to, key) in cases {
        let (code, stderr) = check(&[(from, to)], &[]);
        assert_eq!(code, Some(2), "{key}: {stderr}");
        assert!(
            stderr.contains(&format!("{key}: unknown field")),
            "{key} missing from:\n{stderr}"
        );
    }
}

/// `server.outbound_proxy` must be a proxy's URL; and through it, a provider host the gateway
/// cannot resolve is refused (nothing would check it later), unless `outbound_allow` names it.
#[test]
fn the_outbound_proxy_is_checked_and_unresolvable_targets_are_refused_through_it() {
    let (code, stderr) = check(
        &[(
            "[server]",
            "[server]\noutbound_proxy = \"socks5://egress:1080/x\"",
        )],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("server.outbound_proxy: must be"),
        "{stderr}"
    );
    // Public address literals for the other targets: they need no name lookup.
    let literals = [
        ("https://atenea-tst.trust.lat", "https://1.1.1.1"),
        ("https://api-tst.trust.lat", "https://1.1.1.2"),
        ("https://payments.internal.example", "https://1.1.1.3"),
        ("https://verification.didit.me", "https://1.1.1.4"),
    ];
    let proxied = (
        "[server]",
        "[server]\noutbound_proxy = \"http://10.0.0.9:3128\"",
    );
    let unresolvable = (
        "base_url = \"https://api.gu1.ai\"",
        "base_url = \"https://gu1.no-such-host.invalid\"",
    );
    let (code, stderr) = check(&[&literals[..], &[proxied, unresolvable]].concat(), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("providers.gu1:"), "{stderr}");
    assert!(stderr.contains("does not resolve"), "{stderr}");
    assert!(
        !stderr.contains("no-such-host"),
        "the value is not echoed: {stderr}"
    );
    // Named in outbound_allow, it is the proxy's to reach.
    let allowed = (
        "outbound_allow = [\"10.20.0.0/16\"",
        "outbound_allow = [\"gu1.no-such-host.invalid\", \"10.20.0.0/16\"",
    );
    let (code, stderr) = check(
        &[&literals[..], &[proxied, unresolvable, allowed]].concat(),
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
}

/// The numbers not covered above have their ranges too, each refused naming its key.
#[test]
fn every_other_number_has_a_range() {
    let retries = format!("retry_seconds = {:?}", vec![1; 101]);
    let (code, stderr) = check(
        &[
            (
                "[server]",
                "[server]\nauth_failures_per_minute = 0\nmax_connections = 2000000\n\
                 request_timeout_ms = 86400000",
            ),
            (
                "rate_limit = { per_second = 20, burst = 40 }",
                "rate_limit = { per_second = 20, burst = 4000000000 }",
            ),
            ("amount = 1.20", "amount = 1e300"),
            (
                "[reconciler]",
                &format!("[webhooks]\n{retries}\n\n[reconciler]"),
            ),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    for key in [
        "server.auth_failures_per_minute: must be from 1 to 1000000",
        "server.max_connections: must be from 1 to 1000000",
        "server.request_timeout_ms: must be from 1 to 3600000",
        "providers.betrust-cl.rate_limit: per_second and burst must each be from 1 to 1000000",
        "providers.gu1.price_per_verification.amount: must be a number from 0 to 1000000",
        "webhooks.retry_seconds: needs 1 to 100 attempts",
    ] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
    for (line, message) in [
        ("timeout_ms = 999999999", "must be from 1 to 600000"),
        ("tries = 0", "tries must be from 1 to 100"),
        (
            "expiration_seconds = 4000000000",
            "expiration_seconds must be from 1 to 2592000",
        ),
        (
            "token_margin_seconds = 999999",
            "token_margin_seconds must be from 0 to 86400",
        ),
    ] {
        let (code, stderr) = check(
            &[(
                "company_id = \"201\"",
                &format!("company_id = \"201\"\n{line}"),
            )],
            &[],
        );
        assert_eq!(code, Some(2), "{line}: {stderr}");
        assert!(
            stderr.contains("providers.betrust-cl:") && stderr.contains(message),
            "{line}: {stderr}"
        );
    }
}

/// An experiment's `horizon` is a duration from a second to 90 days; a bad one is refused naming
/// its key, without echoing what was written.
#[test]
fn an_experiments_horizon_is_a_bounded_duration() {
    for horizon in [
        "100d",
        "0s",
        "forever-and-ever",
        "-5h",
        "99999999999999999999h",
    ] {
        let (code, stderr) = check(
            &[(
                "guardrail_pp = 10 }",
                &format!("guardrail_pp = 10, horizon = \"{horizon}\" }}"),
            )],
            &[],
        );
        assert_eq!(code, Some(2), "{horizon}: {stderr}");
        assert!(
            stderr.contains("tenants.payments.routing.experiment.horizon: must be a duration"),
            "{horizon}: {stderr}"
        );
        assert!(!stderr.contains(horizon), "{horizon} echoed: {stderr}");
    }
    for horizon in ["36h", "2d 12h", "90days"] {
        let edit = format!("guardrail_pp = 10, horizon = \"{horizon}\" }}");
        let (code, stderr) = check(&[("guardrail_pp = 10 }", &edit)], &[]);
        assert_eq!(code, Some(0), "{horizon}: {stderr}");
    }
}

/// Adaptive routing names 2 to 8 priced instances, once each, in one currency; bounds that leave
/// room for every instance; countries the experiment does not take first; a bounded horizon.
#[test]
fn adaptive_routing_is_checked_whole() {
    let experiment = "guardrail_pp = 10 }\n";
    let optimize = |spec: &str| format!("guardrail_pp = 10 }}\noptimize = {{ {spec} }}\n");
    let priced = (
        "company_id = \"201\"\n",
        "company_id = \"201\"\nprice_per_verification = { amount = 1.00, currency = \"USD\" }\n",
    );
    let cases: &[(String, bool, &[&str])] = &[
        (
            optimize("countries = [\"AR\"], among = [\"betrust-cl\", \"gu1\", \"gu1\"]"),
            false,
            &[
                "optimize.among[0]: needs a price_per_verification above 0",
                "optimize.among[2]: names an instance twice",
            ],
        ),
        (
            optimize("countries = [\"AR\"], among = [\"gu1\"]"),
            true,
            &["optimize.among: must name 2 to 8 instances"],
        ),
        (
            optimize("countries = [\"AR\"], among = [\"nope\", \"gu1\"]"),
            true,
            &["optimize.among[0]: names no provider instance of this policy"],
        ),
        (
            optimize("countries = [\"CL\"], among = [\"betrust-cl\", \"gu1\"]"),
            true,
            &["optimize.countries: overlap the experiment's"],
        ),
        (
            optimize("among = [\"betrust-cl\", \"gu1\"], min_share = 60, max_share = 4000000000"),
            true,
            &[
                "optimize.countries: overlap the experiment's",
                "optimize.min_share: min_share and max_share must be percentages",
            ],
        ),
        (
            optimize(
                "countries = [\"XX\"], among = [\"betrust-cl\", \"gu1\"], horizon = \"1000d\"",
            ),
            true,
            &[
                "optimize.countries[0]: must be an ISO 3166-1 alpha-2 code",
                "optimize.horizon: must be a duration",
            ],
        ),
    ];
    for (edit, with_price, keys) in cases {
        let mut edits = vec![(experiment, edit.as_str())];
        if *with_price {
            edits.push(priced);
        }
        let (code, stderr) = check(&edits, &[]);
        assert_eq!(code, Some(2), "{edit}: {stderr}");
        for key in *keys {
            let key = format!("tenants.payments.routing.{key}");
            assert!(stderr.contains(&key), "{key} missing from:\n{stderr}");
        }
    }
    // Prices in two currencies.
    let (code, stderr) = check(
        &[
            (
                experiment,
                &optimize("countries = [\"AR\"], among = [\"betrust-cl\", \"gu1\"]"),
            ),
            (
                "company_id = \"201\"\n",
                "company_id = \"201\"\nprice_per_verification = { amount = 900, currency = \"CLP\" }\n",
            ),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("optimize.among: prices must all be in one currency"),
        "{stderr}"
    );
    // A good one passes.
    let good = optimize(
        "countries = [\"AR\", \"MX\"], among = [\"betrust-cl\", \"gu1\"], min_share = 20, \
         max_share = 80, horizon = \"36h\"",
    );
    let (code, stderr) = check(&[(experiment, &good), priced], &[]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// A key's `scope` is `full` or `read`; anything else is refused naming the key, not echoed.
#[test]
fn a_keys_scope_is_full_or_read() {
    let (code, stderr) = check(
        &[("scope = \"read\" }", "scope = \"admin-everything\" }")],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("tenants.payments.api_keys"), "{stderr}");
    assert!(!stderr.contains("admin-everything"), "{stderr}");
    let (code, stderr) = check(&[("scope = \"read\" }", "scope = \"full\" }")], &[]);
    assert_eq!(code, Some(0), "{stderr}");
}
