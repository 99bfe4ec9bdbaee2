//! Fault injection and request counting for the API. (Being built.)

/// Faults to inject and counters of served requests.
#[derive(Debug, Default)]
pub struct Faults {}
