//! The steerer gRPC contract (`proto/steerer/v1`): messages, client and server stubs, and the
//! encoded file descriptor set served by reflection.

pub mod format;
pub mod names;

/// `steerer.v1`: the rollout service and its messages.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("steerer.v1");
}

/// The encoded `FileDescriptorSet` of every proto file the API uses (its imports included), for
/// `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("steerer_descriptor");

impl v1::Phase {
    /// The phases a rollout ends in: the one list clients and tests share.
    pub const TERMINAL: [v1::Phase; 4] = [
        v1::Phase::Succeeded,
        v1::Phase::RolledBack,
        v1::Phase::Aborted,
        v1::Phase::Failed,
    ];

    /// Whether a rollout in this phase has ended.
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }
}
