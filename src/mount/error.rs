//! Filesystem errors and the one mapping to errno (MOUNT.md, "Errors").

use std::sync::Arc;

use super::backend::BackendError;

/// Why a filesystem operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    #[error("no such entry")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("read-only file system")]
    ReadOnly,
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// Invalid content, with a reason that names what is wrong (an id, a parent).
    #[error("invalid argument: {0}")]
    InvalidContent(String),
    /// A local file the mount writes (the spool of a layer written before its json) failed.
    #[error("local disk: {context}: {source}")]
    Disk {
        context: &'static str,
        source: Arc<std::io::Error>,
    },
    /// A refusal already recorded (see `RegistryFs::refusals`) and logged, with the
    /// mount-relative path it concerned.
    #[error("{path}: {source}")]
    At { path: String, source: Box<FsError> },
    #[error("bad file handle")]
    BadHandle,
    #[error("already exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("cannot move this across the tree")]
    CrossDevice,
    #[error("registry: {0}")]
    Registry(#[from] BackendError),
}

impl FsError {
    /// The errno a program sees.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::Invalid(_) | FsError::InvalidContent(_) => libc::EINVAL,
            // A full disk is what the writer must hear about; anything else is an I/O error.
            FsError::Disk { source, .. } => match source.raw_os_error() {
                Some(e @ (libc::ENOSPC | libc::EDQUOT)) => e,
                _ => libc::EIO,
            },
            FsError::At { source, .. } => source.errno(),
            FsError::BadHandle => libc::EBADF,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::CrossDevice => libc::EXDEV,
            FsError::Registry(e) => match e {
                BackendError::NotFound => libc::ENOENT,
                BackendError::Unauthorized | BackendError::Forbidden => libc::EACCES,
                BackendError::Conflict => libc::EEXIST,
                // The registry refused what we sent: the caller's input was wrong.
                BackendError::Refused(_) => libc::EINVAL,
                // Checksum mismatch, 5xx, connection refused, timeout: after retries.
                BackendError::Server(_)
                | BackendError::Transport(_)
                | BackendError::Timeout
                | BackendError::Protocol(_) => libc::EIO,
            },
        }
    }

    /// Whether the adapter need not log this failure above debug: it is expected in normal
    /// use, or it was already logged, with its path, where it was refused.
    pub fn is_routine(&self) -> bool {
        matches!(
            self,
            FsError::NotFound | FsError::Registry(BackendError::NotFound) | FsError::At { .. }
        )
    }

    /// A local disk failure, keeping its cause.
    pub fn disk(context: &'static str, e: std::io::Error) -> Self {
        FsError::Disk {
            context,
            source: Arc::new(e),
        }
    }

    /// The failure itself, without the path a refusal adds.
    pub fn cause(&self) -> &FsError {
        match self {
            FsError::At { source, .. } => source.cause(),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_documented_errno() {
        assert_eq!(FsError::NotFound.errno(), libc::ENOENT);
        assert_eq!(
            FsError::Registry(BackendError::NotFound).errno(),
            libc::ENOENT
        );
        assert_eq!(
            FsError::Registry(BackendError::Forbidden).errno(),
            libc::EACCES
        );
        assert_eq!(
            FsError::Registry(BackendError::Unauthorized).errno(),
            libc::EACCES
        );
        assert_eq!(
            FsError::Registry(BackendError::Conflict).errno(),
            libc::EEXIST
        );
        assert_eq!(
            FsError::Registry(BackendError::Server(503)).errno(),
            libc::EIO
        );
        assert_eq!(FsError::Registry(BackendError::Timeout).errno(), libc::EIO);
        assert_eq!(
            FsError::Registry(BackendError::Transport("refused".into())).errno(),
            libc::EIO
        );
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        assert_eq!(FsError::NotPermitted("x").errno(), libc::EPERM);
        assert_eq!(FsError::Invalid("x").errno(), libc::EINVAL);
        assert_eq!(FsError::InvalidContent("x".into()).errno(), libc::EINVAL);
    }

    #[test]
    fn a_full_disk_is_enospc_and_other_disk_failures_eio() {
        let full = FsError::disk("spool", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.errno(), libc::ENOSPC);
        let quota = FsError::disk("spool", std::io::Error::from_raw_os_error(libc::EDQUOT));
        assert_eq!(quota.errno(), libc::EDQUOT);
        let broken = FsError::disk("spool", std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(broken.errno(), libc::EIO);
        let other = FsError::disk("spool", std::io::Error::other("odd"));
        assert_eq!(other.errno(), libc::EIO);
    }

    #[test]
    fn a_recorded_refusal_keeps_its_errno_and_is_not_logged_again() {
        let e = FsError::At {
            path: "images/x/json".into(),
            source: Box::new(FsError::Invalid("json is not valid JSON")),
        };
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(e.is_routine());
        assert_eq!(
            e.to_string(),
            "images/x/json: invalid argument: json is not valid JSON"
        );
        assert!(matches!(e.cause(), FsError::Invalid(_)));
    }
}
