//! The client's integration tests (SDK and CLI), one test binary: a module per
//! behaviour, so the crate links its dependencies once.
#![allow(clippy::unwrap_used)]

mod support;

mod cli;
mod tls;
mod watch_resume;
