//! The public keys of ASAP issuers, fetched from the key server and cached per `kid`.
//!
//! * A fetched key is fresh for the key TTL.
//! * A failed fetch is remembered for the negative TTL: no new fetch for that `kid` before then.
//! * When refreshing a key fails (timeout, connection error, 5xx, bad body), the old key is
//!   still served for at most the stale window past its TTL. A `404`/`410` withdraws the key.
//! * Concurrent look-ups of a `kid` that needs fetching share one fetch (single flight). The
//!   fetch runs in its own task, so a caller that gives up does not cancel it.
//! * At most [`MAX_CONCURRENT_FETCHES`] fetches run at once, and the cache holds at most
//!   [`MAX_CACHED_KIDS`] kids, so made-up `kid`s cannot exhaust the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use jitsi_scaler_core::backoff::Backoff;
use jitsi_scaler_core::clock::{Clock, UnixMillis};
use jsonwebtoken::DecodingKey;
use tokio::sync::Semaphore;

use super::config::redact_url;
use super::metrics::AuthMetrics;
use super::public_key::{decoding_key, kid_file_stem, parse_rsa_public_key_pem, public_key_url};

/// Fetches running at the same time, at most.
pub const MAX_CONCURRENT_FETCHES: usize = 8;
/// Kids remembered (keys and failures), at most.
pub const MAX_CACHED_KIDS: usize = 10_000;
/// Largest key document read.
const MAX_PEM_BYTES: usize = 64 * 1024;
/// HTTP attempts per fetch (the whole fetch is bounded by the fetch timeout).
const MAX_ATTEMPTS: u32 = 3;
/// Pause between attempts.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));

/// Why no key is available for a `kid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// The key server has no key for this `kid` (`404`/`410`).
    NotFound,
    /// The key could not be fetched or read.
    Unavailable,
}

/// How the key store behaves.
#[derive(Clone)]
pub(crate) struct KeyStoreSettings {
    pub(crate) base_url: String,
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) max_stale: Duration,
    pub(crate) fetch_timeout: Duration,
}

impl std::fmt::Debug for KeyStoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStoreSettings")
            .field("base_url", &redact_url(&self.base_url))
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("max_stale", &self.max_stale)
            .field("fetch_timeout", &self.fetch_timeout)
            .finish()
    }
}

type FetchResult = Result<Arc<DecodingKey>, KeyError>;
type SharedFetch = Shared<BoxFuture<'static, FetchResult>>;

/// A fetched key.
struct CachedKey {
    key: Arc<DecodingKey>,
    fetched_at_ms: UnixMillis,
}

/// What is known about one `kid`.
#[derive(Default)]
struct KidEntry {
    /// The last key fetched, if it was not withdrawn.
    key: Option<CachedKey>,
    /// No new fetch before this time (set by a failed fetch).
    retry_after_ms: UnixMillis,
    /// The outcome of the last failed fetch, answered until `retry_after_ms`.
    last_error: Option<KeyError>,
    /// The fetch in flight, shared by every waiting look-up.
    inflight: Option<SharedFetch>,
}

/// What a look-up found under the lock.
enum Found {
    Key(Arc<DecodingKey>),
    Refused(KeyError),
    Wait(SharedFetch),
}

/// The per-`kid` key cache with its fetcher.
pub(crate) struct KeyStore {
    settings: KeyStoreSettings,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    metrics: Arc<AuthMetrics>,
    entries: Mutex<HashMap<Arc<str>, KidEntry>>,
    fetch_permits: Semaphore,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("settings", &self.settings)
            .field("cached_kids", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// A key store fetching with its own HTTP client.
    pub(crate) fn new(
        settings: KeyStoreSettings,
        clock: Arc<dyn Clock>,
        metrics: Arc<AuthMetrics>,
    ) -> Result<Self, reqwest::Error> {
        // reqwest is built without a rustls crypto provider; make sure one is installed
        // (installing fails harmlessly when the process already has one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("jitsi-scaler/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            settings,
            client,
            clock,
            metrics,
            entries: Mutex::new(HashMap::new()),
            fetch_permits: Semaphore::new(MAX_CONCURRENT_FETCHES),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, KidEntry>> {
        // The map stays consistent even if a holder panicked: every update is a single step.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ttl_ms(&self) -> i64 {
        duration_ms(self.settings.ttl)
    }

    /// Until when a key fetched at `fetched_at_ms` may be served when refreshing fails.
    fn stale_until(&self, fetched_at_ms: UnixMillis) -> UnixMillis {
        fetched_at_ms + self.ttl_ms() + duration_ms(self.settings.max_stale)
    }

    /// The verification key of `kid`, from the cache or the key server.
    pub(crate) async fn get(self: &Arc<Self>, kid: &str) -> FetchResult {
        let found = self.find_or_start_fetch(kid);
        match found {
            Found::Key(key) => Ok(key),
            Found::Refused(err) => Err(err),
            Found::Wait(fetch) => fetch.await,
        }
    }

    fn find_or_start_fetch(self: &Arc<Self>, kid: &str) -> Found {
        let now = self.clock.now_ms();
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(kid) {
            if let Some(cached) = &entry.key
                && now < cached.fetched_at_ms + self.ttl_ms()
            {
                AuthMetrics::inc(&self.metrics.key_cache_hits);
                return Found::Key(cached.key.clone());
            }
            if let Some(fetch) = &entry.inflight {
                AuthMetrics::inc(&self.metrics.key_fetch_joins);
                return Found::Wait(fetch.clone());
            }
            if now < entry.retry_after_ms {
                if let Some(cached) = &entry.key
                    && now < self.stale_until(cached.fetched_at_ms)
                {
                    AuthMetrics::inc(&self.metrics.key_stale_served);
                    return Found::Key(cached.key.clone());
                }
                AuthMetrics::inc(&self.metrics.key_negative_hits);
                return Found::Refused(entry.last_error.unwrap_or(KeyError::Unavailable));
            }
            let fetch = self.start_fetch(kid);
            entry.inflight = Some(fetch.clone());
            return Found::Wait(fetch);
        }
        let stale_for_ms = self.ttl_ms() + duration_ms(self.settings.max_stale);
        if !make_room(&mut entries, now, stale_for_ms, MAX_CACHED_KIDS) {
            // Every slot holds a fetch in flight: refuse rather than grow.
            AuthMetrics::inc(&self.metrics.key_negative_hits);
            return Found::Refused(KeyError::Unavailable);
        }
        let fetch = self.start_fetch(kid);
        entries.insert(
            Arc::from(kid),
            KidEntry {
                inflight: Some(fetch.clone()),
                ..KidEntry::default()
            },
        );
        Found::Wait(fetch)
    }

    /// Spawns the fetch of `kid` and returns its shared outcome. Called under the lock.
    fn start_fetch(self: &Arc<Self>, kid: &str) -> SharedFetch {
        AuthMetrics::inc(&self.metrics.key_cache_misses);
        let store = Arc::clone(self);
        let kid: Arc<str> = Arc::from(kid);
        let task = tokio::spawn(async move {
            let result = store.fetch(&kid).await;
            store.record(&kid, result)
        });
        async move { task.await.unwrap_or(Err(KeyError::Unavailable)) }
            .boxed()
            .shared()
    }

    /// Stores the outcome of a fetch and decides what the waiting look-ups get.
    fn record(&self, kid: &Arc<str>, result: FetchResult) -> FetchResult {
        let now = self.clock.now_ms();
        let mut entries = self.lock();
        let entry = entries.entry(kid.clone()).or_default();
        entry.inflight = None;
        match result {
            Ok(key) => {
                entry.key = Some(CachedKey {
                    key: key.clone(),
                    fetched_at_ms: now,
                });
                entry.retry_after_ms = 0;
                entry.last_error = None;
                Ok(key)
            }
            Err(err) => {
                AuthMetrics::inc(&self.metrics.key_fetch_failures);
                entry.retry_after_ms = now + duration_ms(self.settings.negative_ttl);
                entry.last_error = Some(err);
                if err == KeyError::NotFound {
                    if entry.key.take().is_some() {
                        tracing::warn!(kid = %kid, "public key withdrawn by the key server");
                    }
                    return Err(err);
                }
                match &entry.key {
                    Some(cached) if now < self.stale_until(cached.fetched_at_ms) => {
                        AuthMetrics::inc(&self.metrics.key_stale_served);
                        tracing::warn!(
                            kid = %kid,
                            age_s = (now - cached.fetched_at_ms) / 1000,
                            "public key refresh failed; serving the cached key"
                        );
                        Ok(cached.key.clone())
                    }
                    _ => {
                        entry.key = None;
                        Err(err)
                    }
                }
            }
        }
    }

    /// Fetches `kid`'s key, retrying transient failures, all within the fetch timeout.
    async fn fetch(&self, kid: &str) -> FetchResult {
        AuthMetrics::inc(&self.metrics.key_fetches);
        let url = public_key_url(&self.settings.base_url, kid);
        let timeout = self.settings.fetch_timeout;
        let attempts = async {
            let _permit = self
                .fetch_permits
                .acquire()
                .await
                .map_err(|_| Attempt::Transient(String::from("fetching is shut down")))?;
            let mut attempt = 0;
            loop {
                match self.fetch_once(&url).await {
                    Err(Attempt::Transient(why)) if attempt + 1 < MAX_ATTEMPTS => {
                        tracing::debug!(kid = %kid, attempt, error = %why, "public key fetch failed; retrying");
                        tokio::time::sleep(RETRY_BACKOFF.delay(attempt)).await;
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        };
        let outcome = match tokio::time::timeout(timeout, attempts).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Attempt::Transient(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        };
        outcome.map_err(|failure| match failure {
            Attempt::NotFound => {
                tracing::info!(kid = %kid, key_file = %kid_file_stem(kid), "no public key published for this kid");
                KeyError::NotFound
            }
            Attempt::Transient(why) | Attempt::Invalid(why) => {
                tracing::warn!(kid = %kid, key_file = %kid_file_stem(kid), error = %why, "public key fetch failed");
                KeyError::Unavailable
            }
        })
    }

    /// One HTTP attempt.
    async fn fetch_once(&self, url: &str) -> Result<Arc<DecodingKey>, Attempt> {
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| Attempt::Transient(without_url(e)))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(Attempt::NotFound);
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(Attempt::Transient(format!("key server answered {status}")));
        }
        if !status.is_success() {
            return Err(Attempt::Invalid(format!("key server answered {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Attempt::Transient(without_url(e)))?
        {
            if body.len() + chunk.len() > MAX_PEM_BYTES {
                return Err(Attempt::Invalid(format!(
                    "key document larger than {MAX_PEM_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let pem = std::str::from_utf8(&body)
            .map_err(|_| Attempt::Invalid(String::from("key document is not UTF-8")))?;
        let key = parse_rsa_public_key_pem(pem).map_err(|e| Attempt::Invalid(e.to_string()))?;
        Ok(Arc::new(decoding_key(&key)))
    }
}

/// Makes room for one more `kid` when `entries` holds `max`: drops entries that are no longer
/// useful, then the oldest one (failures first, then the key fetched longest ago). A fetch in
/// flight is never dropped. Returns whether there is room.
fn make_room(
    entries: &mut HashMap<Arc<str>, KidEntry>,
    now: UnixMillis,
    stale_for_ms: i64,
    max: usize,
) -> bool {
    if entries.len() < max {
        return true;
    }
    entries.retain(|_, e| {
        e.inflight.is_some()
            || now < e.retry_after_ms
            || e.key
                .as_ref()
                .is_some_and(|k| now < k.fetched_at_ms + stale_for_ms)
    });
    if entries.len() < max {
        return true;
    }
    let victim = entries
        .iter()
        .filter(|(_, e)| e.inflight.is_none())
        .min_by_key(|(_, e)| e.key.as_ref().map_or(i64::MIN, |k| k.fetched_at_ms))
        .map(|(kid, _)| kid.clone());
    match victim {
        Some(kid) => {
            entries.remove(&kid);
            true
        }
        None => false,
    }
}

/// The failure of one attempt.
enum Attempt {
    /// Worth retrying (connection error, timeout, 429, 5xx).
    Transient(String),
    /// The key server has no key for this `kid` (`404`/`410`).
    NotFound,
    /// An answer that is not a usable key.
    Invalid(String),
}

/// A reqwest error's text without the URL (it may carry credentials of the base URL).
fn without_url(err: reqwest::Error) -> String {
    err.without_url().to_string()
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fetched_at_ms: UnixMillis) -> KidEntry {
        KidEntry {
            key: Some(CachedKey {
                key: Arc::new(DecodingKey::from_rsa_raw_components(&[1], &[1])),
                fetched_at_ms,
            }),
            ..KidEntry::default()
        }
    }

    fn failure(retry_after_ms: UnixMillis) -> KidEntry {
        KidEntry {
            retry_after_ms,
            last_error: Some(KeyError::NotFound),
            ..KidEntry::default()
        }
    }

    fn inflight() -> KidEntry {
        KidEntry {
            inflight: Some(async { Err(KeyError::Unavailable) }.boxed().shared()),
            ..KidEntry::default()
        }
    }

    fn kids(entries: &HashMap<Arc<str>, KidEntry>) -> Vec<&str> {
        let mut kids: Vec<&str> = entries.keys().map(|k| &**k).collect();
        kids.sort_unstable();
        kids
    }

    #[test]
    fn room_comes_from_useless_entries_first() {
        let mut entries: HashMap<Arc<str>, KidEntry> = HashMap::new();
        entries.insert(Arc::from("fresh"), key(900));
        entries.insert(Arc::from("expired-failure"), failure(999));
        entries.insert(Arc::from("beyond-stale"), key(0));
        entries.insert(Arc::from("fetching"), inflight());
        // now = 1000, keys usable for 500 ms after their fetch.
        assert!(make_room(&mut entries, 1_000, 500, 4));
        assert_eq!(kids(&entries), vec!["fetching", "fresh"]);
    }

    #[test]
    fn then_failures_then_the_oldest_key() {
        let mut entries: HashMap<Arc<str>, KidEntry> = HashMap::new();
        entries.insert(Arc::from("old"), key(100));
        entries.insert(Arc::from("new"), key(200));
        entries.insert(Arc::from("failed"), failure(5_000));
        assert!(make_room(&mut entries, 300, 10_000, 3));
        assert_eq!(kids(&entries), vec!["new", "old"]);
        assert!(make_room(&mut entries, 300, 10_000, 2));
        assert_eq!(kids(&entries), vec!["new"]);
    }

    #[test]
    fn fetches_in_flight_are_never_dropped() {
        let mut entries: HashMap<Arc<str>, KidEntry> = HashMap::new();
        entries.insert(Arc::from("a"), inflight());
        entries.insert(Arc::from("b"), inflight());
        assert!(!make_room(&mut entries, 0, 0, 2));
        assert_eq!(entries.len(), 2);
        assert!(make_room(&mut entries, 0, 0, 3));
    }
}
