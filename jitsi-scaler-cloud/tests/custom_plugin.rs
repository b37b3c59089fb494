//! The HTTP plugin provider against a plugin on 127.0.0.1 implementing the protocol of
//! `docs/plugin-protocol.md`.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use jitsi_scaler_cloud::Secret;
use jitsi_scaler_cloud::custom::{PluginConfig, PluginProvider};
use jitsi_scaler_cloud::testkit::fake_plugin::FakePlugin;
use jitsi_scaler_cloud::testkit::{self, Fault, Fixture, TestServer, conformance};
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::provider::{CloudProvider, ProviderError, ProviderRegistry};

const TOKEN: &str = "plugin-token-123";

fn provider(name: &str, url: &str, token: &str) -> PluginProvider {
    PluginProvider::new(&PluginConfig {
        name: name.to_owned(),
        base_url: url.to_owned(),
        token: Some(Secret::new(token)),
        http: common::fast_http(),
    })
    .expect("provider")
}

fn group(name: &str) -> Group {
    testkit::group(name, "hetzner", "fsn1")
}

struct PluginFixture<'a> {
    plugin: &'a FakePlugin,
    provider: Arc<PluginProvider>,
}

#[async_trait]
impl Fixture for PluginFixture<'_> {
    fn provider(&self) -> Arc<dyn CloudProvider> {
        self.provider.clone()
    }
    fn group(&self, name: &str) -> Group {
        group(name)
    }
    async fn set_fault(&self, fault: Fault) {
        self.plugin.set_fault(fault);
    }
    async fn calls(&self) -> usize {
        self.plugin.calls()
    }
    fn absent_instance_id(&self) -> String {
        "srv/absent 1".into()
    }
}

#[tokio::test]
async fn conformance_against_a_plugin() {
    common::init_tracing();
    let plugin = FakePlugin::start(TOKEN).await;
    let fixture = PluginFixture {
        provider: Arc::new(provider("hetzner", &plugin.url(), TOKEN)),
        plugin: &plugin,
    };
    conformance::run(&fixture).await;
}

#[tokio::test]
async fn launches_carry_the_group_slots_and_keys_and_are_idempotent() {
    let plugin = FakePlugin::start(TOKEN).await;
    let provider = provider("hetzner", &plugin.url(), TOKEN);
    let g = group("idem");
    let request = testkit::launch_request(&g.name, 5, 7);
    let first = provider.launch(&g, &request).await;
    assert_eq!(first.error, None);
    assert_eq!(first.launched.len(), 5);
    let again = provider.launch(&g, &request).await;
    assert_eq!(again.launched, first.launched, "same keys, same instances");
    assert_eq!(plugin.instances().len(), 5);
    let call = &plugin.launch_calls()[0];
    assert_eq!(call.group, g);
    assert_eq!(call.intent_id, request.intent_id);
    assert_eq!(call.current_count, 7);
    assert_eq!(call.slots, request.slots);
    // Five instances at two per page: three pages.
    assert_eq!(provider.list(&g).await.expect("list").len(), 5);
}

#[tokio::test]
async fn partial_launches_report_why() {
    let plugin = FakePlugin::start(TOKEN).await;
    plugin.set_capacity(2);
    let provider = provider("hetzner", &plugin.url(), TOKEN);
    let g = group("partial");
    let outcome = provider
        .launch(&g, &testkit::launch_request(&g.name, 3, 0))
        .await;
    assert_eq!(outcome.launched.len(), 2);
    assert!(
        matches!(outcome.error, Some(ProviderError::Capacity(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_wrong_token_is_a_configuration_error() {
    let plugin = FakePlugin::start(TOKEN).await;
    let provider = provider("hetzner", &plugin.url(), "wrong");
    let error = provider.list(&group("g")).await.expect_err("401");
    assert_eq!(error.class(), "config");
    assert_eq!(plugin.calls(), 1, "not retried");
    assert!(
        !format!("{provider:?}").contains("wrong"),
        "no token in Debug"
    );
}

#[tokio::test]
async fn nonsense_launch_answers_are_not_trusted() {
    let router = axum::Router::new()
        .route(
            "/launch",
            axum::routing::post(|| async {
                axum::Json(serde_json::json!({"launched": [
                    {"slot": 0, "instanceId": "i-0", "displayName": "a"},
                    {"slot": 0, "instanceId": "i-dup", "displayName": "a"},
                    {"slot": 9, "instanceId": "i-9", "displayName": "z"},
                    {"slot": 1, "instanceId": " ", "displayName": "b"}
                ]}))
            }),
        )
        .route("/instances", axum::routing::get(|| async { "not json" }));
    let server = TestServer::start(router).await;
    let provider = provider("odd", &server.url(), TOKEN);
    let g = group("odd");
    let outcome = provider
        .launch(&g, &testkit::launch_request(&g.name, 2, 0))
        .await;
    assert_eq!(outcome.launched.len(), 1);
    assert_eq!(outcome.launched[0].instance_id, "i-0");
    assert!(
        matches!(outcome.error, Some(ProviderError::Fatal(_))),
        "{outcome:?}"
    );
    let listed = provider.list(&g).await;
    assert!(matches!(listed, Err(ProviderError::Fatal(_))), "{listed:?}");
}

#[tokio::test]
async fn several_plugins_coexist_under_their_names() {
    let a = FakePlugin::start(TOKEN).await;
    let b = FakePlugin::start("other").await;
    let registry = ProviderRegistry::new()
        .with(Arc::new(provider("hetzner", &a.url(), TOKEN)))
        .with(Arc::new(provider("scaleway", &b.url(), "other")));
    let g = group("g");
    let outcome = registry
        .get("scaleway")
        .expect("registered")
        .launch(&g, &testkit::launch_request(&g.name, 1, 0))
        .await;
    assert_eq!(outcome.error, None);
    assert_eq!((a.instances().len(), b.instances().len()), (0, 1));
    assert_eq!(
        registry.names().collect::<Vec<_>>(),
        ["hetzner", "scaleway"]
    );
}

/// The OpenAPI description embedded in `docs/plugin-protocol.md`.
fn documented_openapi(dir: &std::path::Path) -> std::path::PathBuf {
    let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/plugin-protocol.md");
    let text = std::fs::read_to_string(&doc).expect("docs/plugin-protocol.md");
    let start = text.find("```yaml\nopenapi:").expect("an OpenAPI block") + "```yaml\n".len();
    let end = start + text[start..].find("```").expect("end of the block");
    let path = dir.join("plugin-protocol.openapi.yaml");
    std::fs::write(&path, &text[start..end]).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_and_the_test_plugin_follow_the_documented_openapi() {
    common::init_tracing();
    let plugin = FakePlugin::start(TOKEN).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = documented_openapi(dir.path());
    let Some(prism) = common::prism::Prism::start(&spec, &plugin.url()).await else {
        return;
    };
    // Prism checks: a call outside the description is refused.
    let refused = common::http_client()
        .get(format!("{}/instances?region=fsn1", prism.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("prism answers");
    assert_eq!(refused.status().as_u16(), 422, "group is required");
    let calls = plugin.calls();
    let fixture = PluginFixture {
        provider: Arc::new(provider("hetzner", &prism.url, TOKEN)),
        plugin: &plugin,
    };
    conformance::launch_list_terminate(&fixture).await;
    conformance::throttling(&fixture).await;
    assert!(
        plugin.calls() > calls,
        "the calls went through Prism to the plugin"
    );
}

#[tokio::test]
async fn an_unreachable_plugin_is_a_transient_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        listener.local_addr().expect("addr").port()
    };
    let provider = provider("gone", &format!("http://127.0.0.1:{port}"), TOKEN);
    let g = group("g");
    assert!(matches!(
        provider.list(&g).await,
        Err(ProviderError::Transient(_))
    ));
    let outcome = provider
        .launch(&g, &testkit::launch_request(&g.name, 1, 0))
        .await;
    assert!(
        matches!(outcome.error, Some(ProviderError::Transient(_))),
        "{outcome:?}"
    );
}
