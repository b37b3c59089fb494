//! The DigitalOcean provider against the stateful fake on 127.0.0.1, directly and through
//! Prism 5.14.2 in proxy mode, which validates every request and every fake answer against
//! DigitalOcean's OpenAPI description (`--errors`: a violation becomes an error answer).

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use jitsi_scaler_cloud::digitalocean::{
    DigitalOceanConfig, DigitalOceanProvider, DropletConfigs, launch_tag,
};
use jitsi_scaler_cloud::testkit::fake_digitalocean::FakeDigitalOcean;
use jitsi_scaler_cloud::testkit::{self, Fault, Fixture, conformance};
use jitsi_scaler_cloud::{ConfigError, Secret};
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::provider::{CloudProvider, ProviderError};

const TOKEN: &str = "dop_v1_test_token_0123456789";

const DROPLETS: &str = r##"{
  "jibri": {"size": "s-1vcpu-1gb", "image": "ubuntu-22-04-x64", "ssh_keys": [], "backups": false,
            "ipv6": false, "monitoring": true, "tags": ["test", "jitsi", "jibri"],
            "user_data": "#cloud-config\nruncmd:\n  - echo hi\n"},
  "conf-b": {"size": "s-2vcpu-4gb", "image": 7555620, "tags": ["jitsi"]}
}"##;

fn provider(base_url: &str) -> DigitalOceanProvider {
    let config = DigitalOceanConfig {
        api_token: Secret::new(TOKEN),
        configuration_file_path: "unused.json".into(),
        base_url: base_url.to_owned(),
        http: common::fast_http(),
    };
    DigitalOceanProvider::with_droplet_configs(
        &config,
        DropletConfigs::from_json(DROPLETS).expect("configs"),
    )
    .expect("provider")
}

fn group(name: &str) -> Group {
    testkit::group(name, "digitalocean", "fra1")
}

struct DoFixture<'a> {
    fake: &'a FakeDigitalOcean,
    provider: Arc<DigitalOceanProvider>,
}

#[async_trait]
impl Fixture for DoFixture<'_> {
    fn provider(&self) -> Arc<dyn CloudProvider> {
        self.provider.clone()
    }
    fn group(&self, name: &str) -> Group {
        group(name)
    }
    async fn set_fault(&self, fault: Fault) {
        self.fake.set_fault(fault);
    }
    async fn calls(&self) -> usize {
        self.fake.calls()
    }
    fn absent_instance_id(&self) -> String {
        "99999999".into()
    }
}

// ----------------------------------------------------------------------------------------------
// Scenarios, each run directly against the fake and through Prism.

async fn conformance_suite(fake: &FakeDigitalOcean, base_url: &str) {
    let fixture = DoFixture {
        fake,
        provider: Arc::new(provider(base_url)),
    };
    conformance::run(&fixture).await;
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path == "/v2/droplets"),
        "delete by tag must never be used"
    );
}

async fn batches_of_ten_mapped_back_by_name(fake: &FakeDigitalOcean, base_url: &str) {
    let provider = provider(base_url);
    let g = group("batch");
    let request = testkit::launch_request(&g.name, 23, 4);
    let seen = fake.requests().len();
    let outcome = provider.launch(&g, &request).await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.launched.len(), 23);
    let posts: Vec<_> = fake.requests()[seen..]
        .iter()
        .filter(|r| r.method == "POST")
        .cloned()
        .collect();
    let sizes: Vec<usize> = posts
        .iter()
        .map(|r| {
            r.body.as_ref().expect("body")["names"]
                .as_array()
                .expect("names")
                .len()
        })
        .collect();
    assert_eq!(sizes, [10, 10, 3]);
    let droplets = fake.droplets();
    for launched in &outcome.launched {
        assert_eq!(
            launched.display_name,
            request.slots[launched.slot].display_name
        );
        let droplet = droplets
            .iter()
            .find(|d| d.id.to_string() == launched.instance_id)
            .expect("launched droplet exists");
        assert_eq!(
            droplet.name, launched.display_name,
            "id mapped back to its own name"
        );
    }
    let body = posts[0].body.as_ref().expect("body");
    assert_eq!(body["region"], "fra1");
    assert_eq!(body["size"], "s-1vcpu-1gb");
    assert_eq!(body["image"], "ubuntu-22-04-x64");
    assert_eq!(body["monitoring"], true);
    assert_eq!(body["user_data"], "#cloud-config\nruncmd:\n  - echo hi\n");
    assert!(body.get("name").is_none());
    let tags: Vec<&str> = body["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    let tag = launch_tag(&request);
    assert_eq!(
        tags,
        ["test", "jitsi", "jibri", "group:batch", tag.as_str()]
    );
}

async fn every_page_is_listed(fake: &FakeDigitalOcean, base_url: &str) {
    for i in 0..450 {
        fake.insert(&format!("big-{i:05}"), &["group:big", "jitsi"], "active");
    }
    for i in 0..30 {
        fake.insert(&format!("other-{i:05}"), &["group:other"], "active");
    }
    let listed = provider(base_url).list(&group("big")).await.expect("list");
    assert_eq!(listed.len(), 450);
    let ids: HashSet<&str> = listed.iter().map(|i| i.instance_id.as_str()).collect();
    assert_eq!(ids.len(), 450, "no droplet twice");
    assert!(
        listed
            .iter()
            .all(|i| i.display_name.starts_with("big-") && i.cloud_status == "Running")
    );
    assert!(
        listed
            .iter()
            .all(|i| i.created_at_ms == Some(1_767_648_700_000))
    );
    let pages: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.query.contains("tag_name=group%3Abig"))
        .map(|r| r.query)
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    for (n, query) in pages.iter().enumerate() {
        assert!(query.contains("per_page=200"), "{query}");
        assert!(query.contains(&format!("page={}", n + 1)), "{query}");
    }
}

async fn a_lost_create_answer_is_looked_up_not_repeated(fake: &FakeDigitalOcean, base_url: &str) {
    let provider = provider(base_url);
    let g = group("lost");
    let request = testkit::launch_request(&g.name, 3, 0);
    let seen = fake.requests().len();
    let posts = || {
        fake.requests()[seen..]
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    };
    fake.lose_create_answers(1);
    let outcome = provider.launch(&g, &request).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.launched.len(), 3);
    let in_group: Vec<_> = fake
        .droplets()
        .into_iter()
        .filter(|d| d.tags.contains(&"group:lost".to_owned()))
        .collect();
    assert_eq!(in_group.len(), 3, "no droplet created twice");
    assert_eq!(posts(), 1, "the batch was not posted again");
    let tag = launch_tag(&request).replace(':', "%3A");
    assert!(
        fake.requests()[seen..]
            .iter()
            .any(|r| r.method == "GET" && r.query.contains(&format!("tag_name={tag}"))),
        "looked the launch tag up"
    );

    // The engine retrying the same launch (same intent, names, keys) creates nothing more.
    let again = provider.launch(&g, &request).await;
    assert_eq!(again.error, None);
    let mut first: Vec<_> = outcome
        .launched
        .iter()
        .map(|l| (l.slot, l.instance_id.clone()))
        .collect();
    let mut second: Vec<_> = again
        .launched
        .iter()
        .map(|l| (l.slot, l.instance_id.clone()))
        .collect();
    first.sort();
    second.sort();
    assert_eq!(first, second);
    assert_eq!(posts(), 1);
}

async fn only_the_groups_droplets_are_deleted(fake: &FakeDigitalOcean, base_url: &str) {
    let provider = provider(base_url);
    let foreign = fake.insert("database-1", &["production"], "active");
    let error = provider
        .terminate(&group("conf-a"), &foreign.to_string())
        .await
        .expect_err("a droplet of no group is not deleted");
    assert_eq!(error.class(), "config", "{error}");
    assert!(fake.droplets().iter().any(|d| d.id == foreign));
    let mine = fake.insert("mine-abcde", &["group:mine"], "off");
    let listed = provider.list(&group("mine")).await.expect("list");
    assert_eq!(
        listed[0].cloud_status, "Terminated",
        "off droplets count as terminated"
    );
    provider
        .terminate(&group("mine"), &mine.to_string())
        .await
        .expect("delete");
    assert!(!fake.droplets().iter().any(|d| d.id == mine));
}

// ----------------------------------------------------------------------------------------------
// Directly against the fake.

#[tokio::test]
async fn conformance_against_the_fake() {
    common::init_tracing();
    let fake = FakeDigitalOcean::start(TOKEN).await;
    conformance_suite(&fake, &fake.url()).await;
}

#[tokio::test]
async fn launches_in_batches_of_ten() {
    common::init_tracing();
    let fake = FakeDigitalOcean::start(TOKEN).await;
    batches_of_ten_mapped_back_by_name(&fake, &fake.url()).await;
}

#[tokio::test]
async fn lists_every_page() {
    common::init_tracing();
    let fake = FakeDigitalOcean::start(TOKEN).await;
    every_page_is_listed(&fake, &fake.url()).await;
}

#[tokio::test]
async fn recovers_a_lost_create_answer_by_the_launch_tag() {
    common::init_tracing();
    let fake = FakeDigitalOcean::start(TOKEN).await;
    a_lost_create_answer_is_looked_up_not_repeated(&fake, &fake.url()).await;
}

#[tokio::test]
async fn deletes_only_droplets_of_the_group() {
    common::init_tracing();
    let fake = FakeDigitalOcean::start(TOKEN).await;
    only_the_groups_droplets_are_deleted(&fake, &fake.url()).await;
}

#[tokio::test]
async fn a_wrong_token_is_a_configuration_error() {
    let fake = FakeDigitalOcean::start(TOKEN).await;
    let config = DigitalOceanConfig {
        api_token: Secret::new("wrong"),
        configuration_file_path: "unused.json".into(),
        base_url: fake.url(),
        http: common::fast_http(),
    };
    let provider = DigitalOceanProvider::with_droplet_configs(
        &config,
        DropletConfigs::from_json(DROPLETS).expect("configs"),
    )
    .expect("provider");
    let error = provider.list(&group("g")).await.expect_err("401");
    assert_eq!(error.class(), "config");
    assert_eq!(fake.calls(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn a_group_without_droplet_configuration_cannot_launch() {
    let fake = FakeDigitalOcean::start(TOKEN).await;
    let provider = provider(&fake.url());
    let mut g = group("jvb-1");
    g.type_name = "JVB".into();
    let outcome = provider
        .launch(&g, &testkit::launch_request(&g.name, 1, 0))
        .await;
    assert!(
        matches!(outcome.error, Some(ProviderError::Config(_))),
        "{outcome:?}"
    );
    assert_eq!(fake.calls(), 0);
}

#[test]
fn group_names_and_configurations_are_validated() {
    let provider = provider("http://127.0.0.1:9");
    assert!(provider.validate_group(&group("prod-jibri-1")).is_empty());
    let errors = provider.validate_group(&group("prod_jibri"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "name");
    assert_eq!(provider.validate_group(&group("-lead")).len(), 1);
    assert_eq!(provider.validate_group(&group("a.b")).len(), 1);
    let mut jvb = group("jvb");
    jvb.type_name = "JVB".into();
    let errors = provider.validate_group(&jvb);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "type");
    // A key equal to the group name wins over the type; types match ignoring case.
    let mut by_name = group("conf-b");
    by_name.type_name = "JVB".into();
    assert!(provider.validate_group(&by_name).is_empty());
    let mut upper = group("x");
    upper.type_name = "JIBRI".into();
    assert!(provider.validate_group(&upper).is_empty());
}

#[test]
fn configuration_comes_from_the_environment_and_hides_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("droplets.json");
    std::fs::write(&path, DROPLETS).expect("write");
    let path_text = path.display().to_string();
    let config = DigitalOceanConfig::from_lookup(|name| match name {
        "DIGITALOCEAN_API_TOKEN" => Some(TOKEN.into()),
        "DIGITALOCEAN_CONFIGURATION_FILE_PATH" => Some(path_text.clone()),
        _ => None,
    })
    .expect("config");
    assert_eq!(config.base_url, "https://api.digitalocean.com");
    assert!(!format!("{config:?}").contains(TOKEN));
    let provider = DigitalOceanProvider::new(&config).expect("provider");
    assert!(!format!("{provider:?}").contains(TOKEN));
    assert_eq!(provider.name(), "digitalocean");

    let missing = DigitalOceanConfig::from_lookup(|name| {
        (name == "DIGITALOCEAN_CONFIGURATION_FILE_PATH").then(|| path_text.clone())
    })
    .expect_err("no token");
    assert_eq!(
        missing,
        ConfigError::Missing {
            variable: "DIGITALOCEAN_API_TOKEN".into()
        }
    );
    std::fs::write(&path, r#"{"jibri": "s-1vcpu"}"#).expect("write");
    let err = DigitalOceanProvider::new(&config).expect_err("entry not an object");
    assert_eq!(err.variable(), "DIGITALOCEAN_CONFIGURATION_FILE_PATH");
}

// ----------------------------------------------------------------------------------------------
// Through Prism.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_prism_every_request_and_answer_follows_the_contract() {
    common::init_tracing();
    let fake = FakeDigitalOcean::start(TOKEN).await;
    let spec = common::data("digitalocean-droplets.openapi.yaml");
    let Some(prism) = common::prism::Prism::start(&spec, &fake.url()).await else {
        return;
    };

    // Prism does check: a request outside the contract is refused and never reaches the fake.
    let calls = fake.calls();
    let refused = common::http_client()
        .get(format!("{}/v2/droplets?per_page=500", prism.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("prism answers");
    assert_eq!(
        refused.status().as_u16(),
        422,
        "per_page above 200 violates the contract"
    );
    let problem = refused.text().await.expect("body");
    assert!(problem.contains("per_page must be <= 200"), "{problem}");
    assert_eq!(fake.calls(), calls);
    // … and an answer outside the contract becomes an error.
    let broken = fake.insert("broken-abcde", &["group:broken"], "exploded");
    let answer = common::http_client()
        .get(format!("{}/v2/droplets/{broken}", prism.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("prism answers");
    assert!(
        answer.status().is_server_error(),
        "status {}",
        answer.status()
    );
    provider(&fake.url())
        .terminate(&group("broken"), &broken.to_string())
        .await
        .expect("cleanup");

    conformance_suite(&fake, &prism.url).await;
    batches_of_ten_mapped_back_by_name(&fake, &prism.url).await;
    a_lost_create_answer_is_looked_up_not_repeated(&fake, &prism.url).await;
    only_the_groups_droplets_are_deleted(&fake, &prism.url).await;
    every_page_is_listed(&fake, &prism.url).await;
}
