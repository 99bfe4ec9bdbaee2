//! The steerer gRPC contract (`proto/steerer/v1`): messages, client and server stubs, and the
//! encoded file descriptor set served by reflection.

/// `steerer.v1`: the rollout service and its messages.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("steerer.v1");
}

/// The encoded `FileDescriptorSet` of every proto file the API uses (its imports included), for
/// `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("steerer_descriptor");
