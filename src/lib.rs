//! regfs: a Docker Registry v1 / Docker Hub v1 server, and a FUSE mount that makes a registry
//! feel like a local directory.
//!
//! - [`server`]: `regfs serve`, the registry (warp over the [`registry`] logic over [`storage`]).
//! - [`names`], [`v1`]: the protocol's names and JSON types, shared by server and mount.

// Tests may unwrap: a panic there is a failed test, not a crashed server.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod client;
pub mod config;
pub mod mount;
pub mod mount_helper;
pub mod names;
pub mod oci;
pub mod registry;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod v1;
