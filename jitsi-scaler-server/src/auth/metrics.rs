//! Counters of the authentication path, as plain atomics for any exporter to read.

use std::sync::atomic::{AtomicU64, Ordering};

use super::error::Reason;

/// Live counters, shared by the verifier, the caches and the authenticator.
#[derive(Debug, Default)]
pub(crate) struct AuthMetrics {
    pub(crate) authorized: AtomicU64,
    pub(crate) key_fetches: AtomicU64,
    pub(crate) key_fetch_failures: AtomicU64,
    pub(crate) key_cache_hits: AtomicU64,
    pub(crate) key_cache_misses: AtomicU64,
    pub(crate) key_fetch_joins: AtomicU64,
    pub(crate) key_negative_hits: AtomicU64,
    pub(crate) key_stale_served: AtomicU64,
    pub(crate) token_cache_hits: AtomicU64,
    pub(crate) token_cache_misses: AtomicU64,
    pub(crate) signature_verifications: AtomicU64,
    refused: [AtomicU64; Reason::ALL.len()],
}

impl AuthMetrics {
    /// Adds one to `counter`.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused request.
    pub(crate) fn refused(&self, reason: Reason) {
        Self::inc(&self.refused[reason.index()]);
    }

    /// A consistent-enough copy of every counter.
    pub(crate) fn snapshot(&self) -> AuthMetricsSnapshot {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AuthMetricsSnapshot {
            authorized: read(&self.authorized),
            key_fetches: read(&self.key_fetches),
            key_fetch_failures: read(&self.key_fetch_failures),
            key_cache_hits: read(&self.key_cache_hits),
            key_cache_misses: read(&self.key_cache_misses),
            key_fetch_joins: read(&self.key_fetch_joins),
            key_negative_hits: read(&self.key_negative_hits),
            key_stale_served: read(&self.key_stale_served),
            token_cache_hits: read(&self.token_cache_hits),
            token_cache_misses: read(&self.token_cache_misses),
            signature_verifications: read(&self.signature_verifications),
            refused: Reason::ALL.map(|reason| (reason, read(&self.refused[reason.index()]))),
        }
    }
}

/// The authentication counters at one moment (all monotonic, since start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthMetricsSnapshot {
    /// Requests let through.
    pub authorized: u64,
    /// Public-key fetches started (one per single-flight fetch, retries included in it).
    pub key_fetches: u64,
    /// Public-key fetches that failed.
    pub key_fetch_failures: u64,
    /// Key look-ups answered from the cache with a fresh key.
    pub key_cache_hits: u64,
    /// Key look-ups that started a fetch.
    pub key_cache_misses: u64,
    /// Key look-ups that waited for a fetch already in flight.
    pub key_fetch_joins: u64,
    /// Key look-ups refused from the negative cache (no fetch).
    pub key_negative_hits: u64,
    /// Key look-ups answered with a key past its TTL because refreshing failed.
    pub key_stale_served: u64,
    /// Tokens found in the verified-token cache (no signature check).
    pub token_cache_hits: u64,
    /// Tokens not in the verified-token cache.
    pub token_cache_misses: u64,
    /// RS256 signature verifications performed.
    pub signature_verifications: u64,
    /// Refused requests per reason, in [`Reason::ALL`] order.
    pub refused: [(Reason, u64); Reason::ALL.len()],
}

impl AuthMetricsSnapshot {
    /// Refused requests with this reason.
    pub fn refused_for(&self, reason: Reason) -> u64 {
        self.refused[reason.index()].1
    }
}
