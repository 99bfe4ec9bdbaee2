//! Manifests created at start-up (`--apply`). (Being built.)

use std::path::Path;

use crate::{SimError, World};

/// Creates every object in a file or directory of manifests.
pub fn apply_path(world: &World, path: &Path) -> Result<(), SimError> {
    let _ = world;
    Err(SimError::Apply {
        path: path.to_owned(),
        message: "not supported yet".into(),
    })
}
