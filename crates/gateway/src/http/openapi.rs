//! The published OpenAPI document.
//!
//! Each handler declares its own entry (utoipa-axum `routes!`), so the spec cannot drift from the
//! code. Two forms exist:
//! - [`document`]: the same for every deployment, checked in as `openapi/openapi.json` (a test
//!   fails when it is stale), and the one to generate clients from;
//! - [`served`]: what `/openapi.json` answers, the same document with this deployment's provider
//!   instance names as the allowed values of `provider` and of the keys of
//!   `subject.provider_refs`, so Swagger UI offers them and a fuzzer never sends a name the policy
//!   does not have.

use crate::http::{analytics, audit, events, ops, subjects, verifications};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kyc-gateway",
        description = crate::http::spec_additions::DESCRIPTION,
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "verifications", description = "Start, read and follow verifications"),
        (name = "subjects", description = "A subject's KYC standing"),
        (name = "events", description = "Outgoing events to the tenant's webhook_url, and their delivery"),
        (name = "policy", description = "The calling tenant's policy in force"),
        (name = "stats", description = "How providers compare on the tenant's verifications"),
        (name = "experiments", description = "Champion-challenger experiments of the tenant's routing, with their verdicts"),
        (name = "audit", description = "The tamper-evident history and its export"),
        (name = "operations", description = "Health and readiness"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The tenant API key"))
                    .build(),
            ),
        );
    }
}

/// The routes of the public API with the document that describes them.
pub fn router_and_document() -> (axum::Router<crate::app::AppState>, utoipa::openapi::OpenApi) {
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(verifications::router())
        .merge(subjects::router())
        .merge(analytics::router())
        .merge(ops::router())
        .merge(events::router())
        .merge(audit::router())
        .merge(crate::http::policy::router())
        .split_for_parts()
}

/// The deployment-independent spec, as checked in at `openapi/openapi.json`: the handlers'
/// entries, and `subject.country` limited to the assigned codes the code accepts.
pub fn document() -> Value {
    complete(router_and_document().1)
}

/// The handlers' entries made into the published document.
pub fn complete(entries: utoipa::openapi::OpenApi) -> Value {
    let mut spec = serde_json::to_value(entries).expect("the spec serializes");
    let countries = serde_json::json!(crate::config::country_codes());
    let schemas = &mut spec["components"]["schemas"];
    schemas["Subject"]["properties"]["country"]["enum"] = countries.clone();
    schemas["CountryRule"]["properties"]["country"]["enum"] = countries.clone();
    schemas["Experiment"]["properties"]["countries"]["items"]["enum"] = countries;
    schemas["Routing"]["properties"]["split"]["additionalProperties"] = serde_json::json!({
        "type": "integer", "minimum": 0, "maximum": crate::config::MAX_WEIGHT
    });
    crate::http::spec_additions::add(&mut spec);
    spec
}

/// The spec as written to `openapi/openapi.json`.
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("the spec serializes");
    text.push('\n');
    text
}

/// The spec a deployment serves: [`document`] with its provider instance names filled in.
pub fn served<'a>(document: &Value, providers: impl IntoIterator<Item = &'a str>) -> Value {
    let names: Vec<Value> = providers.into_iter().map(Value::from).collect();
    let mut spec = document.clone();
    let schemas = &mut spec["components"]["schemas"];
    let mut provider_names = names.clone();
    provider_names.push(Value::Null);
    schemas["CreateVerification"]["properties"]["provider"]["enum"] = Value::Array(provider_names);
    schemas["Subject"]["properties"]["provider_refs"]["propertyNames"] =
        serde_json::json!({"type": "string", "enum": names});
    // A routing (the policy's, or a draft to preview) names instances of this deployment.
    let mut default = names.clone();
    default.push(Value::Null);
    schemas["Routing"]["properties"]["default"]["enum"] = Value::Array(default);
    schemas["Routing"]["properties"]["split"]["propertyNames"] =
        serde_json::json!({"type": "string", "enum": names});
    schemas["Routing"]["properties"]["fallback"]["items"]["enum"] = Value::Array(names.clone());
    schemas["CountryRule"]["properties"]["provider"]["enum"] = Value::Array(names.clone());
    for arm in ["champion", "challenger"] {
        schemas["Experiment"]["properties"][arm]["enum"] = Value::Array(names.clone());
    }
    // The policy's example names the sandbox's instances: shown only where they exist.
    let sandbox = ["betrust-sandbox", "gu1-sandbox"].map(Value::from);
    if !sandbox.iter().all(|name| names.contains(name))
        && let Some(policy) = schemas["TenantPolicy"].as_object_mut()
    {
        policy.remove("example");
    }
    spec
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_spec_is_current() {
        let committed = include_str!("../../../../openapi/openapi.json");
        assert!(
            committed == super::document_json(),
            "openapi/openapi.json differs from the spec the gateway serves; regenerate it with:\n\
             \n    cargo run -p kyc-gateway -- openapi > openapi/openapi.json\n"
        );
    }
}

/// Checks of the spec against itself: every example validates against the schema it illustrates.
#[cfg(test)]
pub(crate) mod checks {
    use serde_json::{Value, json};

    /// A JSON Schema (2020-12, formats checked) validator for `schema`, a schema taken from `spec`
    /// whose `$ref`s point into `spec`.
    pub(crate) fn validator(spec: &Value, schema: &Value) -> jsonschema::Validator {
        let mut root = spec.clone();
        root["$defs"] = json!({ "target": schema });
        root["$ref"] = json!("#/$defs/target");
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&root)
            .expect("the spec's schemas compile")
    }

    /// Every example in `spec`: (where, the example, the schema it must satisfy).
    fn examples(spec: &Value) -> Vec<(String, Value, Value)> {
        fn walk(at: &str, node: &Value, out: &mut Vec<(String, Value, Value)>) {
            match node {
                Value::Object(map) => {
                    // A parameter or a media type carries the schema beside its example; a
                    // schema carries its example inside itself.
                    let schema = map.get("schema").cloned().unwrap_or_else(|| node.clone());
                    if let Some(example) = map.get("example") {
                        out.push((at.to_string(), example.clone(), schema.clone()));
                    }
                    if let Some(Value::Array(many)) = map.get("examples") {
                        for example in many {
                            out.push((at.to_string(), example.clone(), schema.clone()));
                        }
                    }
                    for (key, value) in map {
                        if key != "example" && key != "examples" {
                            walk(&format!("{at}/{key}"), value, out);
                        }
                    }
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(&format!("{at}/{i}"), item, out);
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk("", spec, &mut out);
        out
    }

    fn assert_examples_valid(spec: &Value) -> usize {
        let found = examples(spec);
        for (at, example, schema) in &found {
            let validator = validator(spec, schema);
            let errors: Vec<String> = validator
                .iter_errors(example)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "the example at {at} is invalid: {errors:?}"
            );
        }
        found.len()
    }

    #[test]
    fn every_example_validates_against_its_schema() {
        let spec = super::document();
        let checked = assert_examples_valid(&spec);
        assert!(checked >= 15, "only {checked} examples found");
        // The served form too, with a deployment's provider names filled in.
        assert_examples_valid(&super::served(&spec, ["betrust-sandbox", "gu1-sandbox"]));
        // The create body Swagger UI fills in is among them.
        let create = &spec["components"]["schemas"]["CreateVerification"];
        assert!(create["example"].is_object());
    }

    /// Every answer of every operation, and every event the gateway sends, has an example: on
    /// its media type, or on the schema it names.
    #[test]
    fn every_answer_has_an_example() {
        let spec = super::document();
        let mut checked = 0;
        let mut answers = Vec::new();
        for (path, operations) in spec["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    answers.push((
                        format!("{method} {path} {status}"),
                        response["content"].clone(),
                    ));
                }
            }
        }
        for (event, hook) in spec["webhooks"].as_object().unwrap() {
            answers.push((
                event.clone(),
                hook["post"]["requestBody"]["content"].clone(),
            ));
        }
        for (at, content) in answers {
            for (media, body) in content.as_object().into_iter().flatten() {
                let named = body["schema"]["$ref"]
                    .as_str()
                    .and_then(|r| spec.pointer(r.trim_start_matches('#')))
                    .is_some_and(|schema| schema.get("example").is_some());
                assert!(
                    body.get("example").is_some() || named,
                    "{at} {media}: no example"
                );
                checked += 1;
            }
        }
        assert!(checked >= 100, "only {checked} answers");
    }

    /// A routing names a default or a split with some weight, as the code requires of a draft.
    #[test]
    fn a_routing_without_a_default_or_a_weighted_split_is_schema_invalid() {
        let spec = super::document();
        let routing = &spec["components"]["schemas"]["Routing"];
        let check = validator(&spec, routing);
        assert!(check.is_valid(&json!({"default": "gu1"})));
        assert!(check.is_valid(&json!({"split": {"gu1": 0, "betrust-cl": 3}})));
        for refused in [
            json!({}),
            json!({"default": null}),
            json!({"split": {}}),
            json!({"split": {"gu1": 0}}),
            json!({"fallback": ["gu1"]}),
        ] {
            assert!(!check.is_valid(&refused), "{refused}");
        }
    }

    #[test]
    fn the_example_check_catches_a_bad_example() {
        let spec = super::document();
        let create = &spec["components"]["schemas"]["CreateVerification"];
        let mut bad = create["example"].clone();
        bad["subject"]["country"] = json!("Chile");
        assert!(!validator(&spec, create).is_valid(&bad));
        bad["subject"]["country"] = json!("CL");
        bad["subject"]["email"] = json!("not an address");
        assert!(!validator(&spec, create).is_valid(&bad));
    }
}
