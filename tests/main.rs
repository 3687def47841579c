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

/// Real FUSE mounts; needs /dev/fuse and fusermount3 (`--features fuse-tests`).
#[cfg(feature = "fuse-tests")]
mod mount;
