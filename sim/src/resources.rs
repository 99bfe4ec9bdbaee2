//! The served resources: built-in kinds and those added by CRDs. (Being built.)

/// Served resources.
#[derive(Debug, Default)]
pub struct Registry {}

impl Registry {
    /// The built-in resources.
    pub fn with_builtins() -> Self {
        Self {}
    }
}
