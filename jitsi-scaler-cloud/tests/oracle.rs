//! The Oracle Cloud provider against a fake OCI server on 127.0.0.1 that verifies every
//! request's signature with the public key.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use jitsi_scaler_cloud::Secret;
use jitsi_scaler_cloud::oracle::signing::RequestSigner;
use jitsi_scaler_cloud::oracle::{OracleConfig, OracleEndpoints, OracleProvider};
use jitsi_scaler_cloud::testkit::fake_oci::FakeOci;
use jitsi_scaler_cloud::testkit::{self, Fault, Fixture, conformance};
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::provider::{CloudProvider, ProviderError};
use reqwest::{Method, Url};

const TENANCY: &str =
    "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq";
const USER: &str = "ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq";
const FINGERPRINT: &str = "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34";

fn key_id() -> String {
    format!("{TENANCY}/{USER}/{FINGERPRINT}")
}

async fn fake(ads: usize, fds: usize) -> FakeOci {
    FakeOci::start(
        &key_id(),
        &common::read_data("oci-signing/testkey-public.pem"),
        ads,
        fds,
    )
    .await
}

/// Writes an OCI configuration file for `key_file` (and `pass_phrase`).
fn config_file(dir: &Path, key_file: &Path, pass_phrase: Option<&str>) -> std::path::PathBuf {
    let path = dir.join("config");
    let mut text = format!(
        "[DEFAULT]\nuser={USER}\nfingerprint={FINGERPRINT}\ntenancy={TENANCY}\nregion=test-region-1\nkey_file={}\n",
        key_file.display()
    );
    if let Some(pass) = pass_phrase {
        text.push_str(&format!("pass_phrase={pass}\n"));
    }
    std::fs::write(&path, text).expect("write config");
    path
}

fn config(fake: &FakeOci, file: &Path) -> OracleConfig {
    let mut config = OracleConfig::new(file);
    config.endpoints = OracleEndpoints {
        compute: Some(fake.url()),
        identity: Some(fake.url()),
        ..OracleEndpoints::default()
    };
    config.http = common::fast_http();
    config
}

fn provider_with_key(fake: &FakeOci, key: &str) -> OracleProvider {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(dir.path(), &common::data(key), None);
    OracleProvider::new(&config(fake, &file)).expect("provider")
}

fn provider(fake: &FakeOci) -> OracleProvider {
    provider_with_key(fake, "oci-signing/testkey.pem")
}

fn group(name: &str) -> Group {
    testkit::group(name, "oracle", "test-region-1")
}

struct OciFixture<'a> {
    fake: &'a FakeOci,
    provider: Arc<OracleProvider>,
}

#[async_trait]
impl Fixture for OciFixture<'_> {
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
        "ocid1.instance.oc1.test.absent".into()
    }
}

#[tokio::test]
async fn conformance_against_the_fake() {
    common::init_tracing();
    let fake = fake(2, 3).await;
    let fixture = OciFixture {
        fake: &fake,
        provider: Arc::new(provider(&fake)),
    };
    conformance::run(&fixture).await;
    assert!(
        fake.rejected().is_empty(),
        "every request was signed correctly: {:?}",
        fake.rejected()
    );
}

#[tokio::test]
async fn a_wrong_key_is_rejected_and_reported_as_configuration() {
    let fake = fake(1, 1).await;
    let provider = provider_with_key(&fake, "oci-signing/other-key.pem");
    let error = provider.list(&group("g")).await.expect_err("401");
    assert_eq!(error.class(), "config", "{error}");
    assert!(error.to_string().contains("NotAuthenticated"), "{error}");
    assert_eq!(fake.rejected(), ["signature does not verify"]);
}

#[tokio::test]
async fn stale_dates_and_altered_bodies_are_rejected() {
    let fake = fake(1, 1).await;
    let signer = RequestSigner::from_pem(
        key_id(),
        &common::read_data("oci-signing/testkey.pem"),
        None,
    )
    .expect("key");
    let client = common::http_client();

    let url = Url::parse(&format!(
        "{}/instances?compartmentId=c&limit=100",
        fake.url()
    ))
    .expect("url");
    let send = |date: SystemTime| {
        let mut request = reqwest::Request::new(Method::GET, url.clone());
        signer.authorize_at(&mut request, date).expect("sign");
        client.execute(request)
    };
    let fresh = send(SystemTime::now()).await.expect("answer");
    assert_eq!(fresh.status().as_u16(), 200);
    let stale = send(SystemTime::now() - Duration::from_secs(6 * 60))
        .await
        .expect("answer");
    assert_eq!(stale.status().as_u16(), 401);
    let body: serde_json::Value = stale.json().await.expect("json");
    assert_eq!(body["code"], "NotAuthenticated");

    let launch = Url::parse(&format!(
        "{}/instanceConfigurations/ocid1.instanceconfiguration.oc1.test.config/actions/launch",
        fake.url()
    ))
    .expect("url");
    let mut request = reqwest::Request::new(Method::POST, launch);
    *request.body_mut() = Some(br#"{"instanceType":"compute"}"#.to_vec().into());
    signer.authorize(&mut request).expect("sign");
    *request.body_mut() = Some(br#"{"instanceType":"COMPUTE"}"#.to_vec().into());
    let altered = client.execute(request).await.expect("answer");
    assert_eq!(altered.status().as_u16(), 401);
    let reasons = fake.rejected();
    assert!(reasons[0].contains("more than 5 minutes"), "{reasons:?}");
    assert!(reasons[1].contains("x-content-sha256"), "{reasons:?}");
}

#[tokio::test]
async fn out_of_capacity_moves_to_the_next_untried_placement() {
    common::init_tracing();
    let fake = fake(2, 3).await;
    fake.set_full("Uocm:TEST-AD-1", "FAULT-DOMAIN-1");
    let provider = provider(&fake);
    let g = group("cap");
    let outcome = provider
        .launch(&g, &testkit::launch_request(&g.name, 1, 0))
        .await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.launched.len(), 1);
    let calls = fake.launches();
    let tried: Vec<(String, Option<String>, u16)> = calls
        .iter()
        .map(|c| {
            (
                c.availability_domain.clone(),
                c.fault_domain.clone(),
                c.status,
            )
        })
        .collect();
    assert_eq!(
        tried,
        [
            (
                "Uocm:TEST-AD-1".to_owned(),
                Some("FAULT-DOMAIN-1".to_owned()),
                500
            ),
            (
                "Uocm:TEST-AD-1".to_owned(),
                Some("FAULT-DOMAIN-2".to_owned()),
                200
            ),
        ]
    );
    assert_ne!(
        calls[0].retry_token, calls[1].retry_token,
        "a new placement, a new token"
    );
    let instance = fake
        .instances()
        .into_iter()
        .find(|i| i.id == outcome.launched[0].instance_id)
        .expect("instance");
    assert_eq!(
        instance.fault_domain.as_deref(),
        Some("FAULT-DOMAIN-2"),
        "the fault domain is sent"
    );
    assert_eq!(
        instance.freeform_tags.get("group").map(String::as_str),
        Some("cap")
    );
}

#[tokio::test]
async fn each_placement_is_tried_at_most_once_then_capacity_is_reported() {
    let fake = fake(2, 3).await;
    for ad in ["Uocm:TEST-AD-1", "Uocm:TEST-AD-2"] {
        for fd in ["FAULT-DOMAIN-1", "FAULT-DOMAIN-2", "FAULT-DOMAIN-3"] {
            fake.set_full(ad, fd);
        }
    }
    // One launch call at a time, so that the order is deterministic.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(dir.path(), &common::data("oci-signing/testkey.pem"), None);
    let mut sequential = config(&fake, &file);
    sequential.launch_concurrency = 1;
    let provider = OracleProvider::new(&sequential).expect("provider");
    let g = group("full");
    let outcome = provider
        .launch(&g, &testkit::launch_request(&g.name, 3, 0))
        .await;
    assert!(outcome.launched.is_empty());
    assert!(
        matches!(outcome.error, Some(ProviderError::Capacity(_))),
        "{:?}",
        outcome.error
    );
    let calls = fake.launches();
    let pairs: HashSet<(String, Option<String>)> = calls
        .iter()
        .map(|c| (c.availability_domain.clone(), c.fault_domain.clone()))
        .collect();
    assert_eq!(pairs.len(), 6, "every pair tried");
    let names: HashSet<&str> = calls.iter().map(|c| c.display_name.as_str()).collect();
    for name in names {
        let tried: Vec<_> = calls
            .iter()
            .filter(|c| c.display_name == name)
            .map(|c| (c.availability_domain.clone(), c.fault_domain.clone()))
            .collect();
        let unique: HashSet<_> = tried.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            tried.len(),
            "{name} tried a pair twice: {tried:?}"
        );
    }
    assert_eq!(
        calls.len(),
        6,
        "a pair found full is not offered to the other instances"
    );
}

#[tokio::test]
async fn instances_spread_over_availability_and_fault_domains() {
    let fake = fake(2, 3).await;
    let provider = provider(&fake);
    let g = group("spread");
    let outcome = provider
        .launch(&g, &testkit::launch_request(&g.name, 6, 0))
        .await;
    assert_eq!(outcome.error, None);
    let placed: HashSet<(String, Option<String>)> = fake
        .instances()
        .iter()
        .map(|i| (i.availability_domain.clone(), i.fault_domain.clone()))
        .collect();
    assert_eq!(
        placed.len(),
        6,
        "six instances, six different (AD, FD) pairs"
    );

    // With two instances already in AD-1, the next two go to AD-2.
    let fake = self::fake(2, 3).await;
    let provider = self::provider(&fake);
    fake.insert(
        "skew-aaaaa",
        Some("skew"),
        "RUNNING",
        "Uocm:TEST-AD-1",
        "FAULT-DOMAIN-1",
    );
    fake.insert(
        "skew-bbbbb",
        Some("skew"),
        "RUNNING",
        "Uocm:TEST-AD-1",
        "FAULT-DOMAIN-2",
    );
    fake.insert(
        "other-ccccc",
        Some("other"),
        "RUNNING",
        "Uocm:TEST-AD-2",
        "FAULT-DOMAIN-1",
    );
    let g = group("skew");
    let outcome = provider
        .launch(&g, &testkit::launch_request(&g.name, 2, 2))
        .await;
    assert_eq!(outcome.error, None);
    let new: Vec<_> = fake
        .launches()
        .into_iter()
        .map(|c| (c.availability_domain, c.fault_domain))
        .collect();
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|(ad, _)| ad == "Uocm:TEST-AD-2"), "{new:?}");
    assert_ne!(new[0].1, new[1].1, "different fault domains: {new:?}");
}

#[tokio::test]
async fn a_lost_launch_answer_is_retried_with_the_same_token() {
    common::init_tracing();
    let fake = fake(1, 2).await;
    let provider = provider(&fake);
    let g = group("token");
    let request = testkit::launch_request(&g.name, 1, 0);
    fake.lose_launch_answers(1);
    let outcome = provider.launch(&g, &request).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.launched.len(), 1);
    let calls = fake.launches();
    assert_eq!(calls.len(), 2, "the launch was repeated");
    assert_eq!(calls[0].status, 500);
    assert!(calls[0].retry_token.is_some());
    assert_eq!(
        calls[0].retry_token, calls[1].retry_token,
        "same placement, same token"
    );
    assert_eq!(
        (&calls[0].availability_domain, &calls[0].fault_domain),
        (&calls[1].availability_domain, &calls[1].fault_domain)
    );
    assert_eq!(fake.instances().len(), 1, "one instance, not two");

    // The engine repeating the launch finds the instance by name and launches nothing.
    let again = provider.launch(&g, &request).await;
    assert_eq!(again.error, None);
    assert_eq!(
        again.launched[0].instance_id,
        outcome.launched[0].instance_id
    );
    assert_eq!(fake.launches().len(), 2);
    assert_eq!(fake.instances().len(), 1);
}

#[tokio::test]
async fn lists_every_page_and_only_the_group() {
    let fake = fake(1, 1).await;
    fake.set_page_size(30);
    for i in 0..250 {
        fake.insert(
            &format!("big-{i:05}"),
            Some("big"),
            "RUNNING",
            "Uocm:TEST-AD-1",
            "FAULT-DOMAIN-1",
        );
    }
    for i in 0..40 {
        fake.insert(
            &format!("other-{i:05}"),
            Some("other"),
            "RUNNING",
            "Uocm:TEST-AD-1",
            "FAULT-DOMAIN-1",
        );
    }
    for i in 0..10 {
        fake.insert(
            &format!("untagged-{i:05}"),
            None,
            "RUNNING",
            "Uocm:TEST-AD-1",
            "FAULT-DOMAIN-1",
        );
    }
    for i in 0..5 {
        fake.insert(
            &format!("gone-{i:05}"),
            Some("big"),
            "TERMINATED",
            "Uocm:TEST-AD-1",
            "FAULT-DOMAIN-1",
        );
    }
    let provider = provider(&fake);
    let before = fake.calls();
    let listed = provider.list(&group("big")).await.expect("list");
    assert_eq!(
        fake.calls() - before,
        305_usize.div_ceil(30),
        "one call per page"
    );
    assert_eq!(
        listed.len(),
        250,
        "terminated and foreign instances are dropped"
    );
    assert!(
        listed
            .iter()
            .all(|i| i.display_name.starts_with("big-") && i.cloud_status == "RUNNING")
    );
    let ids: HashSet<&str> = listed.iter().map(|i| i.instance_id.as_str()).collect();
    assert_eq!(ids.len(), 250);
    assert!(listed[0].created_at_ms.is_some());
}

#[tokio::test]
async fn domain_lists_are_cached_per_region() {
    let fake = fake(2, 3).await;
    let provider = provider(&fake);
    let g = group("cache");
    provider
        .launch(&g, &testkit::launch_request(&g.name, 1, 0))
        .await;
    assert_eq!(fake.domain_calls(), 3, "one AD list and one FD list per AD");
    provider
        .launch(&g, &testkit::launch_request(&g.name, 1, 1))
        .await;
    assert_eq!(fake.domain_calls(), 3, "cached");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(dir.path(), &common::data("oci-signing/testkey.pem"), None);
    let mut uncached = config(&fake, &file);
    uncached.domain_cache_ttl = Duration::ZERO;
    let provider = OracleProvider::new(&uncached).expect("provider");
    provider
        .launch(&g, &testkit::launch_request(&g.name, 1, 2))
        .await;
    provider
        .launch(&g, &testkit::launch_request(&g.name, 1, 3))
        .await;
    assert_eq!(fake.domain_calls(), 9, "fetched again once expired");
}

#[tokio::test]
async fn instances_of_no_group_are_not_terminated() {
    let fake = fake(1, 1).await;
    let provider = provider(&fake);
    let foreign = fake.insert("db-1", None, "RUNNING", "Uocm:TEST-AD-1", "FAULT-DOMAIN-1");
    let error = provider
        .terminate(&group("g"), &foreign)
        .await
        .expect_err("not ours");
    assert_eq!(error.class(), "config");
    assert!(
        fake.instances()
            .iter()
            .all(|i| i.lifecycle_state == "RUNNING")
    );
    let bad = provider
        .terminate(&group("g"), "../../evil")
        .await
        .expect_err("not an OCID");
    assert_eq!(bad.class(), "config");
}

#[tokio::test]
async fn pkcs8_and_encrypted_keys_load_from_the_configuration_file() {
    let fake = fake(1, 1).await;
    let listed = provider_with_key(&fake, "oci-signing/testkey-pkcs8.pem")
        .list(&group("g"))
        .await;
    assert_eq!(listed, Ok(Vec::new()));

    let dir = tempfile::tempdir().expect("tempdir");
    let key = common::data("oci-signing/testkey-encrypted-pkcs8.pem");
    let file = config_file(dir.path(), &key, Some("jitsi-scaler-test"));
    let encrypted = OracleProvider::new(&config(&fake, &file)).expect("encrypted key");
    assert_eq!(encrypted.list(&group("g")).await, Ok(Vec::new()));
    assert!(
        !format!("{encrypted:?}").contains("jitsi-scaler-test"),
        "no pass phrase in Debug"
    );
    assert!(fake.rejected().is_empty());

    let file = config_file(dir.path(), &key, None);
    let err = OracleProvider::new(&config(&fake, &file)).expect_err("no pass phrase");
    assert_eq!(err.variable(), "OCI_CONFIGURATION_FILE_PATH");
    assert!(err.to_string().contains("pass_phrase"), "{err}");

    let file = config_file(dir.path(), &dir.path().join("missing.pem"), None);
    let err = OracleProvider::new(&config(&fake, &file)).expect_err("missing key");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn groups_need_a_compartment_an_instance_configuration_and_a_region_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(dir.path(), &common::data("oci-signing/testkey.pem"), None);
    let provider = OracleProvider::new(&OracleConfig::new(&file)).expect("provider");
    assert!(provider.validate_group(&group("ok")).is_empty());
    let mut bad = group("bad");
    bad.compartment_id.clear();
    bad.instance_configuration_id = "pod-template".into();
    bad.region = "evil.example.com/".into();
    let paths: Vec<String> = provider
        .validate_group(&bad)
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(
        paths,
        ["compartmentId", "instanceConfigurationId", "region"]
    );
    let _ = Secret::new("unused");
}
