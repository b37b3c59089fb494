//! Where a `kid`'s public key is published, and how its PEM is read.

use jsonwebtoken::DecodingKey;
use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Lowercase hex SHA-256 of the UTF-8 `kid`: the file name (without `.pem`) of its public key.
pub fn kid_file_stem(kid: &str) -> String {
    hex::encode(Sha256::digest(kid.as_bytes()))
}

/// `${base_url}/${sha256_hex(kid)}.pem`; a trailing `/` of `base_url` is not doubled.
pub fn public_key_url(base_url: &str, kid: &str) -> String {
    format!(
        "{}/{}.pem",
        base_url.trim_end_matches('/'),
        kid_file_stem(kid)
    )
}

/// Why a PEM document is not an acceptable RSA public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    /// Neither `BEGIN PUBLIC KEY` nor `BEGIN RSA PUBLIC KEY`.
    #[error("not a PEM public key (expected BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)")]
    NotPem,
    /// The PEM block does not hold an RSA public key.
    #[error("invalid RSA public key: {0}")]
    Invalid(String),
    /// The modulus is shorter than [`MIN_RSA_BITS`].
    #[error("RSA key of {0} bits is too small (at least {MIN_RSA_BITS} required)")]
    TooSmall(usize),
}

/// Reads an RSA public key from PEM: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`) or PKCS#1
/// (`BEGIN RSA PUBLIC KEY`), with LF or CRLF line ends and surrounding whitespace.
pub fn parse_rsa_public_key_pem(pem: &str) -> Result<RsaPublicKey, PublicKeyError> {
    let normalized;
    let mut pem = pem.trim_start_matches('\u{feff}').trim();
    if pem.contains('\r') {
        normalized = pem.replace("\r\n", "\n");
        pem = normalized.as_str();
    }
    let key = if pem.starts_with("-----BEGIN PUBLIC KEY-----") {
        RsaPublicKey::from_public_key_pem(pem)
            .map_err(|e| PublicKeyError::Invalid(e.to_string()))?
    } else if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        RsaPublicKey::from_pkcs1_pem(pem).map_err(|e| PublicKeyError::Invalid(e.to_string()))?
    } else {
        return Err(PublicKeyError::NotPem);
    };
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(PublicKeyError::TooSmall(bits));
    }
    Ok(key)
}

/// The verification key for RS256 from an RSA public key.
pub(crate) fn decoding_key(key: &RsaPublicKey) -> DecodingKey {
    DecodingKey::from_rsa_raw_components(&key.n().to_bytes_be(), &key.e().to_bytes_be())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2048-bit public key (public material, generated for these tests) in both encodings.
    const SPKI_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAiI5BOMEHYFITMrkNhrZe
a9h2c1/9EueW2unX/cYcBUJsAXcoNrCWB5bV9dVC68mRrAlfKEPeWsYfPrf1rXC8
QqLGxHMw1eTZamv0qraRYiiyr3vmkbYXkIDxHlHDq545ciIpv592/Ny8oEtGEc5C
UldimTB/AVv/AATvQeppkUTDLBQCP06mLMT1EdNvKylZTXvIZ4dFJEjvLxiNfZ3v
NnLYf2jQ7IiiuNBLRr52aQ3PV3f9z59U/mGpzL2jrak12CsXCspSKvGMtc8Dpj4a
HJ7xB9ESdEVJOdHlAa6MbgJdjyhCr5qf4T3QnkqUv81izVa7SiqrKya+jqUP0Rxw
pQIDAQAB
-----END PUBLIC KEY-----
";
    const PKCS1_PEM: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAiI5BOMEHYFITMrkNhrZea9h2c1/9EueW2unX/cYcBUJsAXcoNrCW
B5bV9dVC68mRrAlfKEPeWsYfPrf1rXC8QqLGxHMw1eTZamv0qraRYiiyr3vmkbYX
kIDxHlHDq545ciIpv592/Ny8oEtGEc5CUldimTB/AVv/AATvQeppkUTDLBQCP06m
LMT1EdNvKylZTXvIZ4dFJEjvLxiNfZ3vNnLYf2jQ7IiiuNBLRr52aQ3PV3f9z59U
/mGpzL2jrak12CsXCspSKvGMtc8Dpj4aHJ7xB9ESdEVJOdHlAa6MbgJdjyhCr5qf
4T3QnkqUv81izVa7SiqrKya+jqUP0RxwpQIDAQAB
-----END RSA PUBLIC KEY-----
";
    /// A 1024-bit public key: too small.
    const SMALL_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDhgUdauKZEAJlbpur2uWFUTe6T
RXIm8xxhGbiHnDHwwCBmwd9I7juOEmI0iRkzh0kKGxfTooLJOigfdu6bCgSJ42Oc
r46aQO7RWT/4vQ53/W3jkcYzhxneOYoD07MAaJjr4nvh/K8KgBYxvEyc1o8WbDWz
uN3YBGKcoOynYLTSowIDAQAB
-----END PUBLIC KEY-----
";

    #[test]
    fn kid_path_vector() {
        assert_eq!(
            kid_file_stem("jitsi/test-kid"),
            "6c415d24f0e9d95bdcc755f854e77ce3afa0c0a4122196b5f066cd05393da9e0"
        );
        assert_eq!(
            public_key_url("https://keys.example.com/asap", "jitsi/test-kid"),
            "https://keys.example.com/asap/6c415d24f0e9d95bdcc755f854e77ce3afa0c0a4122196b5f066cd05393da9e0.pem"
        );
        assert_eq!(
            public_key_url("https://keys.example.com/asap/", "jitsi/test-kid"),
            "https://keys.example.com/asap/6c415d24f0e9d95bdcc755f854e77ce3afa0c0a4122196b5f066cd05393da9e0.pem"
        );
    }

    #[test]
    fn both_pem_forms_give_the_same_key() {
        let spki = parse_rsa_public_key_pem(SPKI_PEM).expect("SPKI PEM parses");
        let pkcs1 = parse_rsa_public_key_pem(PKCS1_PEM).expect("PKCS#1 PEM parses");
        assert_eq!(spki, pkcs1);
        assert_eq!(spki.size() * 8, 2048);
        assert!(
            hex::encode(spki.n().to_bytes_be()).starts_with("888e4138c10760521332b90d86b65e6b")
        );
    }

    #[test]
    fn crlf_bom_and_whitespace_are_tolerated() {
        let crlf = format!("\u{feff}\n  {}\r\n\r\n", SPKI_PEM.replace('\n', "\r\n"));
        assert!(parse_rsa_public_key_pem(&crlf).is_ok());
        let crlf = PKCS1_PEM.replace('\n', "\r\n");
        assert!(parse_rsa_public_key_pem(&crlf).is_ok());
    }

    #[test]
    fn bad_documents_are_refused_with_a_reason() {
        assert_eq!(
            parse_rsa_public_key_pem("<html>Not Found</html>"),
            Err(PublicKeyError::NotPem)
        );
        assert!(matches!(
            parse_rsa_public_key_pem(&SPKI_PEM.replace("MIIB", "MIIC")),
            Err(PublicKeyError::Invalid(_))
        ));
        assert_eq!(
            parse_rsa_public_key_pem(SMALL_PEM),
            Err(PublicKeyError::TooSmall(1024))
        );
        // A PKCS#1 body under a SPKI label.
        let mislabelled = PKCS1_PEM.replace("RSA PUBLIC KEY", "PUBLIC KEY");
        assert!(matches!(
            parse_rsa_public_key_pem(&mislabelled),
            Err(PublicKeyError::Invalid(_))
        ));
    }
}
