//! ASAP as a fleet of reference sidecars uses it: one RSA key published on a key server
//! (`<base>/<sha256hex(kid)>.pem`), and per sidecar an RS256 token made as
//! `jsonwebtoken.sign({}, key, {keyid, issuer, audience, expiresIn: 3600})` makes it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use jitsi_scaler_server::auth::kid_file_stem;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::json;

/// The key id the sidecars sign with.
pub const KID: &str = "jitsi/autoscaler-sidecar";
/// The reference sidecar's issuer.
pub const ISSUER: &str = "jitsi-autoscaler-sidecar";
/// The reference's audience.
pub const AUDIENCE: &str = "jitsi-autoscaler";

/// The fleet's signing key.
#[derive(Debug, Clone)]
pub struct SidecarKey {
    private: RsaPrivateKey,
}

impl SidecarKey {
    /// A fresh 2048-bit key.
    pub fn generate() -> Self {
        let private =
            RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
        Self { private }
    }

    /// The public key as the key server publishes it (SPKI PEM).
    pub fn public_pem(&self) -> String {
        self.private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM")
    }

    /// A sidecar's token, issued at `iat` (seconds), valid an hour.
    pub fn sidecar_token(&self, iat: i64) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KID.to_owned());
        let claims = json!({"iat": iat, "exp": iat + 3600, "aud": AUDIENCE, "iss": ISSUER});
        let der = self.private.to_pkcs1_der().expect("PKCS#1 DER");
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(der.as_bytes()))
            .expect("signing")
    }
}

/// A key server on 127.0.0.1 publishing one key, as the sidecars' ASAP server does.
#[derive(Debug)]
pub struct KeyServer {
    addr: SocketAddr,
}

impl KeyServer {
    /// Serves `key`'s public half under `/keys/<sha256hex(kid)>.pem`.
    pub async fn start(key: &SidecarKey) -> Self {
        let file = Arc::new((format!("{}.pem", kid_file_stem(KID)), key.public_pem()));
        let app = Router::new()
            .route("/keys/{file}", get(serve))
            .with_state(file);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the key server");
        let addr = listener.local_addr().expect("key server address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr }
    }

    /// The `ASAP_PUB_KEY_BASE_URL` to give the server.
    pub fn base_url(&self) -> String {
        format!("http://{}/keys", self.addr)
    }
}

async fn serve(
    State(file): State<Arc<(String, String)>>,
    Path(name): Path<String>,
) -> (StatusCode, String) {
    if name == file.0 {
        (StatusCode::OK, file.1.clone())
    } else {
        (StatusCode::NOT_FOUND, String::from("Not Found"))
    }
}
