//! OCI request signing: HTTP Signatures (draft-cavage-08), "signature version 1", rsa-sha256.
//!
//! GET, HEAD and DELETE sign `date (request-target) host`; POST, PUT and PATCH also sign
//! `content-length content-type x-content-sha256`. Keys load from PEM PKCS#1
//! (`BEGIN RSA PRIVATE KEY`), PKCS#8 (`BEGIN PRIVATE KEY`) and encrypted PKCS#8
//! (`BEGIN ENCRYPTED PRIVATE KEY`, PBES2) with the profile's pass phrase. Legacy encrypted PKCS#1
//! (`Proc-Type: 4,ENCRYPTED`) is rejected with a hint to convert it.

use std::fmt;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use jitsi_scaler_core::provider::ProviderError;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// Headers signed on requests without a body.
pub const BASIC_HEADERS: &[&str] = &["date", "(request-target)", "host"];
/// Headers signed on requests with a body.
pub const BODY_HEADERS: &[&str] = &[
    "date",
    "(request-target)",
    "host",
    "content-length",
    "content-type",
    "x-content-sha256",
];

/// A private key could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM is not a supported RSA private key.
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// The key is encrypted and no pass phrase is configured.
    #[error("the key is encrypted; set pass_phrase in the OCI configuration profile")]
    PassPhraseMissing,
    /// The key could not be decoded or decrypted.
    #[error("cannot read the key: {0}")]
    Invalid(String),
}

/// Signs OCI requests with an API signing key.
#[derive(Clone)]
pub struct RequestSigner {
    key_id: String,
    key: SigningKey<Sha256>,
}

impl fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSigner")
            .field("key_id", &self.key_id)
            .field("key", &"***")
            .finish()
    }
}

/// The signature of one request and the headers that carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    /// The exact string that was signed.
    pub signing_string: String,
    /// Base64 RSASSA-PKCS1-v1_5 SHA-256 signature.
    pub signature: String,
    /// The `Authorization` header value.
    pub authorization: String,
    /// Headers to send besides `Authorization` (`date`, and for bodies `content-length`,
    /// `content-type`, `x-content-sha256`), lower-case names.
    pub headers: Vec<(&'static str, String)>,
}

impl RequestSigner {
    /// A signer for `keyId` `<tenancy>/<user>/<fingerprint>` and a PEM private key.
    pub fn from_pem(
        key_id: impl Into<String>,
        pem: &str,
        pass_phrase: Option<&Secret>,
    ) -> Result<Self, KeyError> {
        let key = load_key(pem, pass_phrase)?;
        Ok(Self {
            key_id: key_id.into(),
            key: SigningKey::<Sha256>::new(key),
        })
    }

    /// The `keyId` of the signatures.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs a request to `url` sent at `date` (an IMF-fixdate). `body` is `Some` for methods
    /// that carry one (POST, PUT, PATCH; `Some(b"")` when empty).
    pub fn sign(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        date: &str,
    ) -> SignedRequest {
        let mut headers: Vec<(&'static str, String)> = vec![("date", date.to_owned())];
        let with_body = has_body(method);
        if with_body {
            let body = body.unwrap_or_default();
            headers.push(("content-length", body.len().to_string()));
            headers.push(("content-type", "application/json".to_owned()));
            headers.push(("x-content-sha256", BASE64.encode(Sha256::digest(body))));
        }
        let names = if with_body {
            BODY_HEADERS
        } else {
            BASIC_HEADERS
        };
        let lines: Vec<String> = names
            .iter()
            .map(|name| {
                let value = match *name {
                    "(request-target)" => request_target(method, url),
                    "host" => host(url),
                    other => headers
                        .iter()
                        .find(|(n, _)| *n == other)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default(),
                };
                format!("{name}: {value}")
            })
            .collect();
        let signing_string = lines.join("\n");
        let signature = BASE64.encode(self.key.sign(signing_string.as_bytes()).to_bytes());
        let authorization = format!(
            "Signature algorithm=\"rsa-sha256\",headers=\"{}\",keyId=\"{}\",signature=\"{}\",version=\"1\"",
            names.join(" "),
            self.key_id,
            signature
        );
        SignedRequest {
            signing_string,
            signature,
            authorization,
            headers,
        }
    }

    /// Signs a request about to be sent, dated now, and sets its signature headers.
    pub fn authorize(&self, request: &mut reqwest::Request) -> Result<(), ProviderError> {
        self.authorize_at(request, SystemTime::now())
    }

    /// [`authorize`](Self::authorize) with the given date.
    pub fn authorize_at(
        &self,
        request: &mut reqwest::Request,
        at: SystemTime,
    ) -> Result<(), ProviderError> {
        let date = httpdate::fmt_http_date(at);
        let body = match request.body() {
            None => None,
            Some(body) => Some(body.as_bytes().ok_or_else(|| {
                ProviderError::Fatal("cannot sign a streaming request body".into())
            })?),
        };
        let signed = self.sign(request.method(), request.url(), body, &date);
        let is_delete = *request.method() == Method::DELETE;
        let headers = request.headers_mut();
        for (name, value) in &signed.headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| ProviderError::Fatal(format!("invalid {name} header")))?;
            headers.insert(HeaderName::from_static(name), value);
        }
        if is_delete {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        let mut authorization = HeaderValue::from_str(&signed.authorization)
            .map_err(|_| ProviderError::Fatal("invalid Authorization header".into()))?;
        authorization.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, authorization);
        Ok(())
    }
}

/// POST, PUT and PATCH sign their body.
pub fn has_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// `<lower-case method> <path>?<query>` as sent on the wire.
pub fn request_target(method: &Method, url: &Url) -> String {
    let mut target = format!("{} {}", method.as_str().to_ascii_lowercase(), url.path());
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    target
}

/// The `Host` header a client sends for `url`: the host, plus `:port` when not the default.
pub fn host(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn load_key(pem: &str, pass_phrase: Option<&Secret>) -> Result<RsaPrivateKey, KeyError> {
    let pem = pem.trim();
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let pass = pass_phrase
            .filter(|p| !p.is_empty())
            .ok_or(KeyError::PassPhraseMissing)?;
        return RsaPrivateKey::from_pkcs8_encrypted_pem(pem, pass.expose().as_bytes())
            .map_err(|e| KeyError::Invalid(format!("encrypted PKCS#8 (wrong pass phrase?): {e}")));
    }
    if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        if pem.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(KeyError::Unsupported(
                "legacy encrypted PKCS#1 PEM (Proc-Type: 4,ENCRYPTED); convert it to encrypted \
                 PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key-pkcs8.pem`"
                    .into(),
            ));
        }
        return RsaPrivateKey::from_pkcs1_pem(pem)
            .map_err(|e| KeyError::Invalid(format!("PKCS#1: {e}")));
    }
    if pem.contains("-----BEGIN PRIVATE KEY-----") {
        return RsaPrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| KeyError::Invalid(format!("PKCS#8: {e}")));
    }
    Err(KeyError::Unsupported(
        "expected a PEM RSA private key (BEGIN RSA PRIVATE KEY, BEGIN PRIVATE KEY or BEGIN \
         ENCRYPTED PRIVATE KEY)"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_hosts_are_as_sent() {
        let url =
            Url::parse("http://127.0.0.1:8080/20160918/instances?compartmentId=a%3Ab&limit=100")
                .expect("url");
        assert_eq!(
            request_target(&Method::GET, &url),
            "get /20160918/instances?compartmentId=a%3Ab&limit=100"
        );
        assert_eq!(host(&url), "127.0.0.1:8080");
        let url =
            Url::parse("https://iaas.us-phoenix-1.oraclecloud.com:443/20160918/x").expect("url");
        assert_eq!(host(&url), "iaas.us-phoenix-1.oraclecloud.com");
        assert_eq!(request_target(&Method::DELETE, &url), "delete /20160918/x");
    }

    #[test]
    fn bad_keys_are_rejected_clearly() {
        let err = RequestSigner::from_pem("k", "not a key", None).expect_err("garbage");
        assert!(matches!(err, KeyError::Unsupported(_)));
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----";
        let err = RequestSigner::from_pem("k", legacy, None).expect_err("legacy");
        assert!(err.to_string().contains("openssl pkcs8"), "{err}");
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----";
        assert_eq!(
            RequestSigner::from_pem("k", encrypted, None).expect_err("no pass"),
            KeyError::PassPhraseMissing
        );
    }
}
