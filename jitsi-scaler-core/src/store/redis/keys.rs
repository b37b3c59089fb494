//! Key names (the layout is described in the module docs of [`super`]).

/// Builds every key from the prefix. Group names are escaped (`%` → `%25`, `:` → `%3A`) so a
/// group's keys can never be mistaken for another group's; instance ids are always the last
/// part of a key and need no escaping.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// HASH group name → group record JSON.
    pub(crate) fn groups(&self) -> String {
        format!("{}groups", self.prefix)
    }

    /// HASH group name → version.
    pub(crate) fn versions(&self) -> String {
        format!("{}group-versions", self.prefix)
    }

    /// STRING: the newest fencing token seen (the floor).
    pub(crate) fn fence(&self) -> String {
        format!("{}fence", self.prefix)
    }

    /// STRING counter: first-seen order of states, uniqueness of samples and audit items.
    pub(crate) fn seq(&self) -> String {
        format!("{}seq", self.prefix)
    }

    /// HASH of one instance's flags.
    pub(crate) fn flags(&self, instance_id: &str) -> String {
        format!("{}{instance_id}", self.flags_prefix())
    }

    pub(crate) fn flags_prefix(&self) -> String {
        format!("{}flags:", self.prefix)
    }

    fn group(&self, group: &str) -> String {
        format!("{}group:{}:", self.prefix, escape(group))
    }

    /// HASH of one instance state's parts.
    pub(crate) fn state(&self, group: &str, instance_id: &str) -> String {
        format!("{}{instance_id}", self.state_prefix(group))
    }

    pub(crate) fn state_prefix(&self, group: &str) -> String {
        format!("{}state:", self.group(group))
    }

    /// ZSET instance id, score = first-seen sequence.
    pub(crate) fn instances(&self, group: &str) -> String {
        format!("{}instances", self.group(group))
    }

    /// ZSET of metric samples, score = time.
    pub(crate) fn samples(&self, group: &str) -> String {
        format!("{}samples", self.group(group))
    }

    /// STRING: the engine's bookkeeping JSON.
    pub(crate) fn runtime(&self, group: &str) -> String {
        format!("{}runtime", self.group(group))
    }

    /// ZSET of group audit events, score = time.
    pub(crate) fn audit(&self, group: &str) -> String {
        format!("{}audit", self.group(group))
    }

    /// HASH `<kind>|<instance id>` → time, and `state|<instance id>` → last state.
    pub(crate) fn instance_audit(&self, group: &str) -> String {
        format!("{}instance-audit", self.group(group))
    }

    /// ZSET instance id, score = newest audit time (retention and listing).
    pub(crate) fn instance_audit_index(&self, group: &str) -> String {
        format!("{}instance-audit-index", self.group(group))
    }

    /// STRING `<token> <identity>` with a TTL: the leader lease.
    pub(crate) fn lease(&self) -> String {
        format!("{}leader", self.prefix)
    }

    /// STRING counter: the last fencing token handed out.
    pub(crate) fn lease_counter(&self) -> String {
        format!("{}leader-token", self.prefix)
    }

    /// LIST: a released lease wakes a waiting follower through it.
    pub(crate) fn handover(&self) -> String {
        format!("{}leader-handover", self.prefix)
    }
}

fn escape(group: &str) -> String {
    if !group.contains([':', '%']) {
        return group.to_owned();
    }
    group.replace('%', "%25").replace(':', "%3A")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_cannot_collide() {
        let k = Keys::new("p:");
        assert_eq!(k.state("g", "i-1"), "p:group:g:state:i-1");
        assert_ne!(k.state("a:state:b", "x"), k.state("a", "b:state:x"));
        assert_eq!(k.instances("a:b%"), "p:group:a%3Ab%25:instances");
        assert_ne!(k.samples("a%3A"), k.samples("a:"));
        assert_eq!(k.flags("i-1"), "p:flags:i-1");
    }
}
