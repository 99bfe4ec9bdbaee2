//! The end-to-end suites of the workspace, one test binary: a module per
//! behaviour, so the crate links its dependencies once.
#![allow(clippy::unwrap_used)]

mod cli_support;
mod common;

mod artifacts;
mod cli_errors;
mod cli_restart;
mod cli_rollout;
mod grpcurl;
mod own_metrics;
mod python_client;
mod replicas;
mod rollout_approval;
mod rollout_auto;
mod rollout_bad_input;
mod rollout_baseline;
mod rollout_control;
mod rollout_endings;
mod rollout_event_log;
mod rollout_evidence;
mod rollout_faults;
mod rollout_halts;
mod rollout_latency;
mod rollout_observer;
mod rollout_promote;
mod rollout_records;
mod rollout_restart;
mod rollout_rollback;
mod rollout_routes;
mod rollout_service;
mod rollout_strategies;
mod rollout_templates;
mod rollout_webhooks;
mod server_auth;
mod server_kube_auth;
