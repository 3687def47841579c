//! `regfs mount`: a registry as a directory tree.
//!
//! The split is mountpoint-s3's: [`fs::RegistryFs`] holds the filesystem logic with plain types
//! and is tested without a kernel; `fuse.rs` is a thin `fuser::Filesystem` adapter that hands
//! each callback to the async runtime and replies exactly once. The tree's shape and name rules
//! are in [`tree`], inode identity in [`inode`], caches (one memory budget) in [`cache`], the
//! optional disk cache in [`disk_cache`], and the one errno mapping in [`error`].

pub mod backend;
pub mod cache;
pub mod disk_cache;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod inode;
pub mod tree;

pub use backend::{BackendError, RegistryBackend};
pub use error::FsError;
pub use fs::{FsConfig, RegistryFs};
pub mod credentials;
pub mod run;

pub use run::{MountConfig, MountError, Mounted, mount_fs, run};

/// Locks a mutex of the mount's state. Every critical section leaves its maps consistent, so a
/// panic elsewhere while one was held (poisoning) is harmless.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
