//! Leadership: only the leader reconciles, and every write it makes carries its fencing token.
//!
//! A [`Leadership`] tells, at any instant, whether this node may act and with which token.
//! Implementations stop answering with a token *before* their lease can expire, so a leader
//! that cannot renew stops acting in time. Tokens only grow: a store that has seen token `n`
//! rejects writes carrying a smaller one.

#[cfg(feature = "redis")]
mod redis;

use std::fmt::Debug;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "redis")]
pub use self::redis::{DEFAULT_LEASE_TTL, RedisLeadership, RedisLeadershipConfig};

/// A number that grows with every change of leader.
pub type FencingToken = u64;

/// What a node knows of the leadership, for health endpoints and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadershipStatus {
    /// This node's identity.
    pub identity: String,
    /// This node is the leader now.
    pub is_leader: bool,
    /// The current leader's identity, when known.
    pub leader: Option<String>,
    /// The fencing token of the current leadership, when known.
    pub token: Option<FencingToken>,
}

/// Leader election with fencing.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Leadership: Send + Sync + Debug {
    /// The fencing token while this node is leader with a valid lease; `None` otherwise.
    fn token(&self) -> Option<FencingToken>;

    /// Campaigns for and renews the leadership until `cancel` fires, then releases it so
    /// another node can take over at once.
    async fn run(&self, cancel: CancellationToken);

    /// What this node knows of the leadership.
    fn status(&self) -> LeadershipStatus;
}

/// The only node: always the leader, with token 1.
#[derive(Debug, Clone)]
pub struct SingleNode {
    identity: String,
}

impl SingleNode {
    /// A single node with the given identity.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
        }
    }
}

impl Default for SingleNode {
    fn default() -> Self {
        Self::new("single-node")
    }
}

#[async_trait]
impl Leadership for SingleNode {
    fn token(&self) -> Option<FencingToken> {
        Some(1)
    }

    async fn run(&self, cancel: CancellationToken) {
        cancel.cancelled().await;
    }

    fn status(&self) -> LeadershipStatus {
        LeadershipStatus {
            identity: self.identity.clone(),
            is_leader: true,
            leader: Some(self.identity.clone()),
            token: Some(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn single_node_always_leads_and_returns_on_cancel() {
        let node = SingleNode::new("n1");
        assert_eq!(node.token(), Some(1));
        assert!(node.status().is_leader);
        let cancel = CancellationToken::new();
        cancel.cancel();
        node.run(cancel).await;
    }
}
