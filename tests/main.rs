//! The integration suite: one binary, so the crate links once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Test servers, clients and fixtures shared by the suites.
mod common;

/// The HTTP API against a real server on 127.0.0.1:0: every endpoint, the Docker 1.x push and
/// pull sequences, permissions and hostile input.
mod api;

/// Generated and tabled hostile requests against the in-process router, and raw non-HTTP bytes
/// over a socket: no panic, no 5xx, JSON errors, data intact.
mod hostile;

/// Access control as a table of caller x operation x repository, reserved names, and no
/// credentials in the real binary's trace logs.
mod access;

/// Rules over the whole route table (auth on every route, JSON body rules), bounded password
/// checks, repository writes during a store scan, `Last-Modified` of images.
mod server_rules;

/// Resource limits: upload cap, body and header timeouts, stalled clients, memory under load.
mod limits;

/// One conformance suite for every storage backend.
mod storage;

/// The built binary: arguments, start-up, the URL on stdout.
mod cli;

/// The binary among the tools around it: completions, manual pages, the config file, the
/// mount-helper form of fstab.
mod ecosystem;

/// `kill -9` of the server binary during concurrent pushes: nothing acknowledged is lost.
mod crash;

/// The mount's filesystem logic driven directly, without a kernel mount.
mod fs;

/// The same logic over an in-memory registry behind the backend seam: no server at all.
mod fs_fake;

/// The server and the mount's logic over a store that fails, stalls and cuts reads on purpose.
mod faults;

/// The v2 registry logic (uploads, blobs, manifests) over a store that fails on purpose.
mod v2_store;

/// The disk cache (`--cache-dir`): filled by reads, read back across filesystems, bounded, one
/// owner per directory; with `fuse-tests`, also through a real remount.
mod disk_cache;

/// The embedded registry's mount over local storage: layers pass through to the stored files.
mod stored_layers;

/// Real FUSE mounts; needs /dev/fuse and fusermount3 (`--features fuse-tests`).
#[cfg(feature = "fuse-tests")]
mod mount;

/// The `regfs mount` process: embedded default, signals, registry outages under a live mount.
#[cfg(feature = "fuse-tests")]
mod mount_process;

/// Writes through real mounts: tags, repositories, errors where programs see them.
#[cfg(feature = "fuse-tests")]
mod mount_write;

/// The mount tells the truth through the shell: refusals at `write`, `.regfs/errors`,
/// `cp -r` of repositories, its own pushes visible at once, ENOSPC from a full spool.
#[cfg(feature = "fuse-tests")]
mod mount_truth;

/// `kill -9` of the server under a live `regfs mount` daemon: reads, pushes, a clean stop.
#[cfg(feature = "fuse-tests")]
mod mount_faults;

/// The mount daemon's memory within its budget: registries that ignore `Range`, large trees.
#[cfg(feature = "fuse-tests")]
mod mount_memory;

/// `regfs mount` start-up: mountpoint and registry checks, odd mountpoint names.
#[cfg(feature = "fuse-tests")]
mod mount_startup;

/// Several server instances on one real S3 bucket (`--features s3-tests`, see
/// scripts/s3-local.sh).
#[cfg(feature = "s3-tests")]
mod s3;
