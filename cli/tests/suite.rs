//! The binary's end-to-end tests, one module per file: each starts real
//! hosts through `spillway` and talks to them as a user would. They are one
//! test binary rather than one per file: every file links the same stack,
//! and one link instead of twenty saves CI minutes and gigabytes of disk.
//! Run one file's tests with `cargo test -p spillway --test suite chaos::`.

mod common;

mod async_jobs;
mod burst;
mod chaos;
mod cli;
mod cluster;
mod disaster;
mod executors;
mod gpu_burst;
mod gpu_executors;
mod gpu_fault;
mod gpu_tenants;
mod gpu_weights;
mod host_config;
mod http_api;
mod ingress;
mod metrics;
mod model;
mod openai;
mod peer_rights;
mod rolling;
mod status_page;
mod stream;
mod tls;
mod tokens;
mod toolchains;
mod traces;
mod upgrade;
mod weights;
