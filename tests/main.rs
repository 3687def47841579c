//! The integration suite: one binary, so the crate links once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Test servers, clients and fixtures shared by the suites.
mod common;

/// The HTTP API against a real server on 127.0.0.1:0: every endpoint, the Docker 1.x push and
/// pull sequences, permissions and hostile input.
mod api;

/// One conformance suite for every storage backend.
mod storage;

/// The built binary: arguments, start-up, the URL on stdout.
mod cli;

/// `kill -9` of the server binary during concurrent pushes: nothing acknowledged is lost.
mod crash;

/// The mount's filesystem logic driven directly, without a kernel mount.
mod fs;

/// Real FUSE mounts; needs /dev/fuse and fusermount3 (`--features fuse-tests`).
#[cfg(feature = "fuse-tests")]
mod mount;

/// The `regfs mount` process: embedded default, signals, registry outages under a live mount.
#[cfg(feature = "fuse-tests")]
mod mount_process;

/// Writes through real mounts: tags, repositories, errors where programs see them.
#[cfg(feature = "fuse-tests")]
mod mount_write;

/// `kill -9` of the server under a live `regfs mount` daemon: reads, pushes, a clean stop.
#[cfg(feature = "fuse-tests")]
mod mount_faults;

/// Several server instances on one real S3 bucket (`--features s3-tests`, see
/// scripts/s3-local.sh).
#[cfg(feature = "s3-tests")]
mod s3;
