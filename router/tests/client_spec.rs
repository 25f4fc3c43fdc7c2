//! Unleash's client specification (vendored in `tests/unleash-spec`, see its README), run against
//! a real router on a real database: each file's state goes in through the admin API, and every
//! expectation is checked three ways: `POST /admin/evaluate`; Unleash's own Rust SDK
//! (`unleash-api-client`) polling `GET /api/client/features`, which it reads without segments
//! (Unleash then inlines their constraints); and Unleash's engine given the document an SDK that
//! declares the specification's version gets, segments included. One router, one database:
//! each file's toggles and segments are deleted before the next file.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use localpg::TestDb;
use router::RouteTable;
use router::run::Running;
use serde::Deserialize;
use serde_json::{Value, json};
use unleash_api_client::client::{Client, ClientBuilder, FeatureKey};
use unleash_yggdrasil::{EngineState, UpdateMessage};

const TOKEN: &str = "client-spec-token-4e2a";
const SPEC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/unleash-spec");
/// The version of the vendored specification, which an SDK following it would declare.
const SPEC_VERSION: &str = "6.1.0";

/// Files whose state the router refuses, and why. Each is checked to be refused that way.
const SKIPPED: [(&str, &str, &str); 1] = [(
    "18-utf8-flag-names.json",
    "features[0].name",
    "its toggle names are not URL-friendly (Hellø_Wørld, 😊_φriend_你好_🌍): Unleash refuses such \
     names when a toggle is created, and so does the router's admin API",
)];

/// Toggles of a file's state that the router refuses, though an SDK given the file evaluates
/// them: the whole state is checked to be refused naming `field`, the state is then imported
/// without the toggle, and the expectations about it are skipped.
const REFUSED_TOGGLES: [(&str, &str, &str, &str); 1] = [(
    "15-global-constraints.json",
    "F9.withMissingSegment",
    "features[3].strategies[0].segments[0]",
    "its strategy names segment 404, which does not exist: Unleash's admin API cannot make such \
     a strategy (segments are named by id and must exist), and the router's refuses it with 400; \
     read from an Unleash server, such a strategy is off, as the expectation says (unit-tested)",
)];

/// What the vendored files hold, apart from what is skipped.
const EXPECTED_FILES: usize = 21;
const EXPECTED_TOGGLE_EXPECTATIONS: usize = 224;
const EXPECTED_VARIANT_EXPECTATIONS: usize = 52;
const EXPECTED_SKIPPED_EXPECTATIONS: usize = 1;

#[derive(Debug, Deserialize)]
struct Spec {
    state: Value,
    #[serde(default)]
    tests: Vec<ToggleTest>,
    #[serde(default, rename = "variantTests")]
    variant_tests: Vec<VariantTest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToggleTest {
    description: String,
    context: Value,
    toggle_name: String,
    expected_result: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VariantTest {
    description: String,
    context: Value,
    toggle_name: String,
    expected_result: ExpectedVariant,
}

#[derive(Debug, Deserialize)]
struct ExpectedVariant {
    name: String,
    payload: Option<Payload>,
    enabled: bool,
    feature_enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

/// A variant as one of the three ways saw it.
#[derive(Debug, PartialEq, Eq)]
struct SeenVariant {
    name: String,
    payload: Option<Payload>,
    enabled: bool,
    /// Only `evaluate` and the engine say it; the SDK's variant does not carry it.
    feature_enabled: Option<bool>,
}

impl SeenVariant {
    fn matches(&self, expected: &ExpectedVariant) -> bool {
        self.name == expected.name
            && self.payload == expected.payload
            && self.enabled == expected.enabled
            && match (expected.feature_enabled, self.feature_enabled) {
                (Some(want), Some(got)) => want == got,
                _ => true,
            }
    }
}

/// The SDK wants a typed feature list; this test reads toggles by name only.
#[allow(non_camel_case_types, dead_code)]
#[derive(Debug, Clone, Copy, FeatureKey)]
enum NoTypedFeatures {
    unused,
}

struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("X-Actor", "client-spec")
            .header("X-Reason", "Unleash client specification");
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let (status, reply) = self.call(method.clone(), path, body).await;
        assert_eq!(status, 200, "{method} {path}: {reply}");
        reply
    }

    /// The client-features document as an SDK declaring `spec` (or nothing) gets it.
    async fn client_features(&self, spec: Option<&str>) -> Value {
        let mut req = self
            .http
            .get(format!("{}/api/client/features", self.base))
            .header("authorization", TOKEN);
        if let Some(spec) = spec {
            req = req.header("Unleash-Client-Spec", spec);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        res.json().await.unwrap()
    }

    /// Puts a file's state in as Unleash would have it: a client-features document is imported;
    /// a delta (`{"events": [...]}`) is the list of changes made on an Unleash server, so each
    /// event becomes the admin call that makes that change.
    async fn apply(&self, state: &Value) {
        use reqwest::Method;
        let Some(events) = state.get("events").and_then(Value::as_array) else {
            self.ok(Method::POST, "/admin/toggles", Some(state)).await;
            return;
        };
        for event in events {
            match event["type"].as_str().unwrap() {
                "hydration" => {
                    let document = json!({"version": 2, "features": event["features"],
                        "segments": event["segments"]});
                    self.ok(Method::POST, "/admin/toggles", Some(&document))
                        .await;
                }
                "feature-updated" => {
                    let name = event["feature"]["name"].as_str().unwrap();
                    let path = format!("/admin/toggles/{name}");
                    self.ok(Method::PUT, &path, Some(&event["feature"])).await;
                }
                "feature-removed" => {
                    let name = event["featureName"].as_str().unwrap();
                    self.ok(Method::DELETE, &format!("/admin/toggles/{name}"), None)
                        .await;
                }
                "segment-updated" => {
                    let path = format!("/admin/segments/{}", event["segment"]["id"]);
                    self.ok(Method::PUT, &path, Some(&event["segment"])).await;
                }
                "segment-removed" => {
                    let path = format!("/admin/segments/{}", event["segmentId"]);
                    self.ok(Method::DELETE, &path, None).await;
                }
                other => panic!("unknown delta event type {other}"),
            }
        }
    }

    /// Deletes every toggle, then every segment (a segment in use cannot be deleted).
    async fn clear(&self) {
        use reqwest::Method;
        let all = self.ok(Method::GET, "/admin/toggles", None).await;
        for feature in all["features"].as_array().unwrap() {
            let name = feature["name"].as_str().unwrap();
            self.ok(Method::DELETE, &format!("/admin/toggles/{name}"), None)
                .await;
        }
        for segment in all["segments"].as_array().unwrap() {
            let path = format!("/admin/segments/{}", segment["id"]);
            self.ok(Method::DELETE, &path, None).await;
        }
    }
}

async fn start(db: &TestDb) -> Running {
    support::start_instance(
        db.url(),
        TOKEN,
        RouteTable::musiccorp(),
        "client-spec",
        router::sync::Source::Store,
        router::proxy::Limits::default(),
    )
    .await
}

/// Waits until the SDK's last poll has `marker` on: it then holds what was stored before it.
async fn sdk_sees(sdk: &Client<NoTypedFeatures>, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sdk.is_enabled_str(marker, None, false) {
        assert!(Instant::now() < deadline, "the SDK never fetched {marker}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn payload_of(json: &Value) -> Option<Payload> {
    serde_json::from_value(json.clone()).ok()
}

/// Counts of what was checked, and of the expectations skipped.
#[derive(Debug, Default)]
struct Counts {
    files: usize,
    toggles: usize,
    variants: usize,
    skipped: usize,
}

#[tokio::test]
async fn the_unleash_client_specification_holds_through_the_admin_api_and_an_official_sdk() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let r = start(&db).await;
    let admin = Admin {
        base: format!("http://{}", r.admin_addr),
        http: reqwest::Client::new(),
    };
    let sdk = Arc::new(
        ClientBuilder::default()
            .interval(20)
            .disable_metric_submission()
            .enable_string_features()
            .into_client::<NoTypedFeatures>(
                &format!("{}/api", admin.base),
                "client-spec",
                "client-spec-test",
                Some(TOKEN.into()),
            )
            .expect("sdk client"),
    );
    let poller = tokio::spawn({
        let sdk = sdk.clone();
        async move { sdk.poll_for_updates().await }
    });

    let index: Vec<String> =
        serde_json::from_slice(&std::fs::read(format!("{SPEC_DIR}/index.json")).unwrap()).unwrap();
    let mut counts = Counts::default();
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    for (i, file) in index.iter().enumerate() {
        let spec: Spec =
            serde_json::from_slice(&std::fs::read(format!("{SPEC_DIR}/{file}")).unwrap())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Some((_, field, why)) = SKIPPED.iter().find(|(name, ..)| name == file) {
            let (status, reply) = admin
                .call(reqwest::Method::POST, "/admin/toggles", Some(&spec.state))
                .await;
            assert_eq!(
                (status, reply["error"]["field"].as_str()),
                (400, Some(*field)),
                "{file}"
            );
            skipped.push(format!("{file}: {why}"));
            continue;
        }
        let mut state = spec.state.clone();
        let mut left_out = None;
        if let Some((_, toggle, field, why)) = REFUSED_TOGGLES.iter().find(|(f, ..)| f == file) {
            let (status, reply) = admin
                .call(reqwest::Method::POST, "/admin/toggles", Some(&state))
                .await;
            assert_eq!(
                (status, reply["error"]["field"].as_str()),
                (400, Some(*field)),
                "{file}"
            );
            let features = state["features"].as_array_mut().unwrap();
            features.retain(|f| f["name"] != *toggle);
            left_out = Some(*toggle);
            skipped.push(format!("{file}, toggle {toggle}: {why}"));
        }
        admin.apply(&state).await;
        let marker = format!("client-spec.loaded.{i}");
        admin
            .ok(
                reqwest::Method::PUT,
                &format!("/admin/toggles/{marker}"),
                Some(&json!({"name": marker, "enabled": true})),
            )
            .await;
        sdk_sees(&sdk, &marker).await;
        // An SDK that reads segments gets them; the Rust SDK, which does not say so, gets
        // their constraints inlined.
        let with_segments = admin.client_features(Some(SPEC_VERSION)).await;
        assert!(
            with_segments["segments"].is_array(),
            "{file}: {with_segments}"
        );
        let inlined = admin.client_features(None).await;
        assert!(inlined.get("segments").is_none(), "{file}: {inlined}");
        let engine = EngineState::default();
        let document = serde_json::from_value(with_segments).unwrap();
        // Warnings are the engine's own (an operator it does not know); SDKs log and go on.
        let _ = engine.take_state(UpdateMessage::FullResponse(document));

        for test in &spec.tests {
            let name = &test.toggle_name;
            if left_out == Some(name.as_str()) {
                counts.skipped += 1;
                continue;
            }
            let said = |way: &str, got: bool| {
                (got != test.expected_result).then(|| {
                    format!(
                        "{file} / {}: {way} said {got} for {name}, expected {}",
                        test.description, test.expected_result
                    )
                })
            };
            let evaluated = admin
                .ok(
                    reqwest::Method::POST,
                    "/admin/evaluate",
                    Some(&json!({"toggle": name, "context": test.context})),
                )
                .await;
            let sdk_context = serde_json::from_value(test.context.clone()).unwrap();
            let engine_context = serde_json::from_value(test.context.clone()).unwrap();
            failures.extend(
                [
                    said("evaluate", evaluated["enabled"].as_bool().unwrap()),
                    said(
                        "the SDK",
                        sdk.is_enabled_str(name, Some(&sdk_context), false),
                    ),
                    said(
                        "the engine",
                        engine.is_enabled(name, &engine_context, &None),
                    ),
                ]
                .into_iter()
                .flatten(),
            );
            counts.toggles += 1;
        }

        for test in &spec.variant_tests {
            let name = &test.toggle_name;
            if left_out == Some(name.as_str()) {
                counts.skipped += 1;
                continue;
            }
            let evaluated = admin
                .ok(
                    reqwest::Method::POST,
                    "/admin/evaluate",
                    Some(&json!({"toggle": name, "context": test.context})),
                )
                .await["variant"]
                .clone();
            let sdk_context = serde_json::from_value(test.context.clone()).unwrap();
            let engine_context = serde_json::from_value(test.context.clone()).unwrap();
            let from_sdk = sdk.get_variant_str(name, &sdk_context);
            let from_engine = engine.get_variant(name, &engine_context, &None);
            let seen = [
                (
                    "evaluate",
                    SeenVariant {
                        name: evaluated["name"].as_str().unwrap().to_string(),
                        payload: payload_of(&evaluated["payload"]),
                        enabled: evaluated["enabled"].as_bool().unwrap(),
                        feature_enabled: evaluated["featureEnabled"].as_bool(),
                    },
                ),
                (
                    "the SDK",
                    SeenVariant {
                        name: from_sdk.name.clone(),
                        payload: payload_of(&json!(from_sdk.payload)),
                        enabled: from_sdk.enabled,
                        feature_enabled: None,
                    },
                ),
                (
                    "the engine",
                    SeenVariant {
                        name: from_engine.name.clone(),
                        payload: payload_of(&json!(from_engine.payload)),
                        enabled: from_engine.enabled,
                        feature_enabled: Some(from_engine.feature_enabled),
                    },
                ),
            ];
            for (way, variant) in seen {
                if !variant.matches(&test.expected_result) {
                    failures.push(format!(
                        "{file} / {}: {way} gave {variant:?} for {name}, expected {:?}",
                        test.description, test.expected_result
                    ));
                }
            }
            counts.variants += 1;
        }
        counts.files += 1;
        admin.clear().await;
    }
    sdk.stop_poll().await;
    let _ = poller.await;
    r.stop().await;

    println!(
        "Unleash client specification {SPEC_VERSION}: {} files, {} toggle expectations and {} \
         variant expectations, each checked through evaluate, the Rust SDK and the engine; \
         skipped: {} file(s) and {} expectation(s):\n  {}",
        counts.files,
        counts.toggles,
        counts.variants,
        SKIPPED.len(),
        counts.skipped,
        skipped.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        (
            counts.files,
            counts.toggles,
            counts.variants,
            counts.skipped
        ),
        (
            EXPECTED_FILES,
            EXPECTED_TOGGLE_EXPECTATIONS,
            EXPECTED_VARIANT_EXPECTATIONS,
            EXPECTED_SKIPPED_EXPECTATIONS
        ),
        "files run, toggle and variant expectations checked, expectations skipped"
    );
    assert_eq!(counts.files + SKIPPED.len(), index.len());
}
