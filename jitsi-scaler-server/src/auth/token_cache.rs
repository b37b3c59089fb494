//! Tokens that verified, remembered by their SHA-256 until they expire, so a sidecar that
//! re-sends the same token for 45 minutes costs one signature check, not one per request.
//!
//! The cache is split into shards, each behind its own read-write lock; a hit is a read lock
//! and a map look-up, and cloning the [`Principal`] only bumps reference counts.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use jitsi_scaler_core::clock::UnixMillis;

use super::principal::Principal;

/// SHA-256 of a bearer token: the cache key (the token itself is never stored).
pub(crate) type TokenHash = [u8; 32];

const SHARDS: usize = 16;

struct Entry {
    principal: Principal,
    valid_until_ms: UnixMillis,
}

/// A bounded map from token hash to the principal it authenticated.
pub(crate) struct VerifiedTokenCache {
    shards: Vec<RwLock<HashMap<TokenHash, Entry>>>,
    per_shard_capacity: usize,
}

impl std::fmt::Debug for VerifiedTokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokenCache")
            .field("capacity", &(self.per_shard_capacity * SHARDS))
            .finish_non_exhaustive()
    }
}

impl VerifiedTokenCache {
    /// A cache of about `capacity` tokens (0 disables caching).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard_capacity: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, hash: &TokenHash) -> &RwLock<HashMap<TokenHash, Entry>> {
        &self.shards[usize::from(hash[0]) % SHARDS]
    }

    /// The principal of a token that verified and is still valid at `now_ms`.
    pub(crate) fn get(&self, hash: &TokenHash, now_ms: UnixMillis) -> Option<Principal> {
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .get(hash)
            .filter(|entry| now_ms < entry.valid_until_ms)
            .map(|entry| entry.principal.clone())
    }

    /// Remembers a verified token until `valid_until_ms`. When the shard is full, expired
    /// entries go first, then the one expiring soonest.
    pub(crate) fn insert(
        &self,
        hash: TokenHash,
        principal: Principal,
        valid_until_ms: UnixMillis,
        now_ms: UnixMillis,
    ) {
        if self.per_shard_capacity == 0 || valid_until_ms <= now_ms {
            return;
        }
        let mut shard = self
            .shard(&hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard_capacity && !shard.contains_key(&hash) {
            shard.retain(|_, entry| now_ms < entry.valid_until_ms);
            if shard.len() >= self.per_shard_capacity {
                let soonest = shard
                    .iter()
                    .min_by_key(|(_, entry)| entry.valid_until_ms)
                    .map(|(key, _)| *key);
                if let Some(key) = soonest {
                    shard.remove(&key);
                }
            }
        }
        shard.insert(
            hash,
            Entry {
                principal,
                valid_until_ms,
            },
        );
    }

    /// Tokens currently held (expired ones included until evicted).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principal::Role;

    fn hash(first: u8, n: u8) -> TokenHash {
        let mut h = [0u8; 32];
        h[0] = first;
        h[1] = n;
        h
    }

    fn principal(role: Role) -> Principal {
        Principal {
            role,
            ..Principal::unauthenticated()
        }
    }

    #[test]
    fn hit_until_valid_until() {
        let cache = VerifiedTokenCache::new(100);
        cache.insert(hash(1, 1), principal(Role::Sidecar), 2_000, 1_000);
        assert_eq!(
            cache.get(&hash(1, 1), 1_999).map(|p| p.role),
            Some(Role::Sidecar)
        );
        assert!(cache.get(&hash(1, 1), 2_000).is_none());
        assert!(cache.get(&hash(1, 2), 1_000).is_none());
    }

    #[test]
    fn already_expired_tokens_are_not_stored() {
        let cache = VerifiedTokenCache::new(100);
        cache.insert(hash(1, 1), principal(Role::Admin), 1_000, 1_000);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_full_shard_evicts_expired_then_soonest_expiring() {
        // 16 shards × 2 entries; every hash below lands in shard 0.
        let cache = VerifiedTokenCache::new(32);
        cache.insert(hash(0, 1), principal(Role::Read), 5_000, 0);
        cache.insert(hash(0, 2), principal(Role::Read), 1_000, 0);
        // Full; at 1_500 entry 2 has expired and goes.
        cache.insert(hash(0, 3), principal(Role::Read), 9_000, 1_500);
        assert!(cache.get(&hash(0, 1), 1_500).is_some());
        assert!(cache.get(&hash(0, 3), 1_500).is_some());
        // Full again, nothing expired: entry 1 (expires soonest) goes.
        cache.insert(hash(0, 4), principal(Role::Read), 8_000, 1_500);
        assert!(cache.get(&hash(0, 1), 1_500).is_none());
        assert!(cache.get(&hash(0, 3), 1_500).is_some());
        assert!(cache.get(&hash(0, 4), 1_500).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        let cache = VerifiedTokenCache::new(0);
        cache.insert(hash(0, 1), principal(Role::Read), 5_000, 0);
        assert!(cache.get(&hash(0, 1), 0).is_none());
    }
}
