//! The host's replication state bits (the Go SDK's `consts.ReplicationState`) and the checks
//! a plugin makes before it writes from background work.

/// A replication state bit mask, as [`super::SystemView::replication_state`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicationState(pub i32);

impl ReplicationState {
    /// This cluster is a performance-replication primary.
    pub const PERFORMANCE_PRIMARY: i32 = 1 << 5;
    /// This cluster is a performance-replication secondary.
    pub const PERFORMANCE_SECONDARY: i32 = 1 << 6;
    /// This cluster is a disaster-recovery primary.
    pub const DR_PRIMARY: i32 = 1 << 8;
    /// This cluster is a disaster-recovery secondary.
    pub const DR_SECONDARY: i32 = 1 << 9;
    /// Performance replication is off.
    pub const PERFORMANCE_DISABLED: i32 = 1 << 12;
    /// DR replication is off.
    pub const DR_DISABLED: i32 = 1 << 13;
    /// This node is a performance standby (serves reads, forwards writes).
    pub const PERFORMANCE_STANDBY: i32 = 1 << 14;

    /// Whether every bit of `bits` is set.
    pub fn has(self, bits: i32) -> bool {
        self.0 & bits == bits
    }

    /// This node is a performance standby.
    pub fn is_performance_standby(self) -> bool {
        self.has(Self::PERFORMANCE_STANDBY)
    }

    /// This cluster is a performance secondary.
    pub fn is_performance_secondary(self) -> bool {
        self.has(Self::PERFORMANCE_SECONDARY)
    }

    /// This cluster is a DR secondary.
    pub fn is_dr_secondary(self) -> bool {
        self.has(Self::DR_SECONDARY)
    }

    /// Whether this node may write the mount's replicated storage and change the outside
    /// world for it: not on a DR secondary or a performance standby, and on a performance
    /// secondary only for a local mount. Periodic work checks this before it acts.
    pub fn writes_allowed(self, local_mount: bool) -> bool {
        !(self.is_dr_secondary()
            || self.is_performance_standby()
            || (self.is_performance_secondary() && !local_mount))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_where_writes_may_happen() {
        let standalone = ReplicationState(4096 | 8192);
        assert!(standalone.writes_allowed(false));
        let standby = ReplicationState(4096 | 8192 | 16384);
        assert!(standby.is_performance_standby());
        assert!(!standby.writes_allowed(true));
        let secondary = ReplicationState(64);
        assert!(!secondary.writes_allowed(false));
        assert!(secondary.writes_allowed(true), "a local mount is its own");
        assert!(!ReplicationState(512).writes_allowed(true));
    }
}
