//! Request bodies: read with a size limit, JSON checked, every failure a JSON error.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde_json::Value;

use super::{ApiError, AppState};

/// Reads the body, refusing more than the configured limit (413).
async fn read(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                ApiError::TooLarge(limit)
            } else {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            }
        })
}

/// Deepest JSON nesting a sidecar body may have: serde_json's own recursion limit. Sidecar
/// metadata is stored verbatim, so anything deeper would be stored and later be unreadable
/// by every consumer with a default JSON parser.
pub const MAX_SIDECAR_DEPTH: usize = 128;

/// Whether a JSON text nests deeper than [`MAX_SIDECAR_DEPTH`]. A text cannot nest deeper
/// than it has openings, and counting them is a fast, vectorised pass: sidecar bodies hold a
/// handful, so the byte-by-byte scan runs only for suspicious ones.
fn too_deep(bytes: &[u8]) -> bool {
    let openings = memchr::memchr2_iter(b'{', b'[', bytes).count();
    openings > MAX_SIDECAR_DEPTH && nesting_depth(bytes) > MAX_SIDECAR_DEPTH
}

/// The deepest nesting of arrays and objects in a JSON text (strings skipped; the text need
/// not be valid: the parser decides that).
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A sidecar body: any content type (the sidecar always sends JSON; R1 asks to parse it
/// whatever the header says), at most [`MAX_SIDECAR_DEPTH`] levels deep.
#[derive(Debug)]
pub struct SidecarBody(pub Bytes);

impl FromRequest<AppState> for SidecarBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read(req, state.limits.max_body_bytes).await?;
        if too_deep(&bytes) {
            return Err(ApiError::BadRequest(format!(
                "malformed JSON body: nested deeper than {MAX_SIDECAR_DEPTH} levels"
            )));
        }
        Ok(SidecarBody(bytes))
    }
}

/// An admin body: JSON (or no content type), parsed; an empty body reads as `{}`.
#[derive(Debug)]
pub struct JsonBody(pub Value);

fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || mime.ends_with("+json")
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = read(req, state.limits.max_body_bytes).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Object(serde_json::Map::new())));
        }
        if let Some(ct) = content_type.filter(|ct| !ct.is_empty())
            && !is_json(&ct)
        {
            return Err(ApiError::UnsupportedMediaType);
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_SIDECAR_DEPTH, is_json, nesting_depth, too_deep};

    #[test]
    fn nesting_depth_skips_strings() {
        assert_eq!(nesting_depth(b"{}"), 1);
        assert_eq!(nesting_depth(br#"{"a":[1,{"b":[]}],"c":{}}"#), 4);
        assert_eq!(nesting_depth(br#"{"a":"[[[[{{{{"}"#), 1);
        assert_eq!(nesting_depth(br#"{"a":"x\"[[[","b":[]}"#), 2);
        assert_eq!(nesting_depth(br#"{"a":"\\","b":[[]]}"#), 3);
        assert_eq!(nesting_depth(b"]]]]{"), 1);
        assert_eq!(nesting_depth(b""), 0);
        let deep = "[".repeat(500) + &"]".repeat(500);
        assert_eq!(nesting_depth(deep.as_bytes()), 500);
    }

    #[test]
    fn only_texts_nesting_past_the_limit_are_too_deep() {
        let nested = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(!too_deep(nested(MAX_SIDECAR_DEPTH).as_bytes()));
        assert!(too_deep(nested(MAX_SIDECAR_DEPTH + 1).as_bytes()));
        // Many openings, all shallow, or all inside a string: not too deep.
        let wide = format!("[{}]", vec!["{}"; 500].join(","));
        assert!(!too_deep(wide.as_bytes()));
        let quoted = format!(r#"{{"a":"{}"}}"#, "[".repeat(500));
        assert!(!too_deep(quoted.as_bytes()));
    }

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
