//! The simulator's integration tests, one test binary: a module per
//! behaviour, so the crate links its dependencies once.
#![allow(clippy::unwrap_used)]

mod support;

mod auth;
mod bad_requests;
mod binary;
mod conformance;
mod controllers;
mod faults;
mod kube_client;
mod kubectl;
mod leader_election;
mod mesh_mode;
mod mesh_prometheus;
mod scale;
