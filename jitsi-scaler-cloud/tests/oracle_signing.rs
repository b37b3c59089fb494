//! OCI request signing against Oracle's published vectors and the SDK's output: the signing
//! string, the signature and the whole `Authorization` header must match exactly, with the
//! key as PKCS#1, as PKCS#8 and as encrypted PKCS#8.

mod common;

use jitsi_scaler_cloud::Secret;
use jitsi_scaler_cloud::oracle::signing::{KeyError, RequestSigner};
use reqwest::{Method, Url};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    key_id: String,
    date: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    method: String,
    url: String,
    headers_sent: std::collections::BTreeMap<String, String>,
    signing_string: String,
    expected_signature: String,
    expected_authorization: String,
    #[serde(default)]
    body_file: Option<String>,
    #[serde(default)]
    body: Option<String>,
}

fn vectors() -> Vectors {
    serde_json::from_str(&common::read_data("oci-signing/vectors.json")).expect("vectors.json")
}

fn body_of(vector: &Vector) -> Option<Vec<u8>> {
    match (&vector.body_file, &vector.body) {
        (Some(file), _) => {
            Some(std::fs::read(common::data(&format!("oci-signing/{file}"))).expect("body file"))
        }
        (None, Some(body)) => Some(body.as_bytes().to_vec()),
        (None, None) => None,
    }
}

fn check_all(signer: &RequestSigner, key_name: &str) {
    let all = vectors();
    assert_eq!(all.vectors.len(), 4);
    for vector in &all.vectors {
        let method = Method::from_bytes(vector.method.as_bytes()).expect("method");
        let url = Url::parse(&vector.url).expect("url");
        let body = body_of(vector);
        let signed = signer.sign(&method, &url, body.as_deref(), &all.date);
        let context = format!("vector {} with {key_name}", vector.name);
        assert_eq!(
            signed.signing_string, vector.signing_string,
            "{context}: signing string"
        );
        assert_eq!(
            signed.signature, vector.expected_signature,
            "{context}: signature"
        );
        assert_eq!(
            signed.authorization, vector.expected_authorization,
            "{context}: Authorization"
        );
        for (name, value) in &signed.headers {
            assert_eq!(
                vector.headers_sent.get(*name),
                Some(value),
                "{context}: header {name}"
            );
        }
    }
}

#[test]
fn the_four_vectors_with_the_pkcs1_key() {
    let all = vectors();
    let signer = RequestSigner::from_pem(
        all.key_id,
        &common::read_data("oci-signing/testkey.pem"),
        None,
    )
    .expect("PKCS#1 key");
    check_all(&signer, "testkey.pem");
}

#[test]
fn the_four_vectors_with_the_pkcs8_key() {
    let all = vectors();
    let signer = RequestSigner::from_pem(
        all.key_id,
        &common::read_data("oci-signing/testkey-pkcs8.pem"),
        None,
    )
    .expect("PKCS#8 key");
    check_all(&signer, "testkey-pkcs8.pem");
}

#[test]
fn the_four_vectors_with_the_encrypted_pkcs8_key() {
    let all = vectors();
    let pem = common::read_data("oci-signing/testkey-encrypted-pkcs8.pem");
    let signer = RequestSigner::from_pem(
        all.key_id.clone(),
        &pem,
        Some(&Secret::new("jitsi-scaler-test")),
    )
    .expect("encrypted PKCS#8 key");
    check_all(&signer, "testkey-encrypted-pkcs8.pem");
    let wrong = RequestSigner::from_pem(all.key_id.clone(), &pem, Some(&Secret::new("wrong")))
        .expect_err("wrong pass phrase");
    assert!(matches!(wrong, KeyError::Invalid(_)), "{wrong}");
    assert_eq!(
        RequestSigner::from_pem(all.key_id, &pem, None).expect_err("no pass phrase"),
        KeyError::PassPhraseMissing
    );
}

#[test]
fn authorize_sets_exactly_the_signed_headers() {
    let all = vectors();
    let signer = RequestSigner::from_pem(
        all.key_id,
        &common::read_data("oci-signing/testkey.pem"),
        None,
    )
    .expect("key");
    let vector = all
        .vectors
        .iter()
        .find(|v| v.name == "post-official")
        .expect("post vector");
    let body = body_of(vector).expect("body");
    let url = Url::parse(&vector.url).expect("url");
    let mut request = reqwest::Request::new(Method::POST, url.clone());
    *request.body_mut() = Some(body.clone().into());
    // The documentation's date names the wrong weekday (5 Jan 2014 was a Sunday), so the
    // header is compared with a signature made for the date `authorize` writes.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_388_957_500);
    signer.authorize_at(&mut request, at).expect("authorize");
    let header = |n: &str| {
        request
            .headers()
            .get(n)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    let date = httpdate::fmt_http_date(at);
    assert_eq!(header("date").as_deref(), Some(date.as_str()));
    let expected = signer.sign(&Method::POST, &url, Some(&body), &date);
    assert_eq!(header("authorization"), Some(expected.authorization));
    for name in ["content-length", "x-content-sha256", "content-type"] {
        assert_eq!(
            header(name).as_ref(),
            vector.headers_sent.get(name),
            "{name}"
        );
    }
    assert!(
        request
            .headers()
            .get("authorization")
            .expect("auth")
            .is_sensitive()
    );
    assert!(
        !format!("{signer:?}").contains("PRIVATE"),
        "no key material in Debug"
    );

    let mut delete = reqwest::Request::new(Method::DELETE, url);
    signer.authorize_at(&mut delete, at).expect("authorize");
    assert_eq!(
        delete.headers().get("content-length").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert!(
        delete.headers().get("x-content-sha256").is_none(),
        "DELETE signs no body"
    );
}
