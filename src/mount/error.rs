//! Filesystem errors and the one mapping to errno (MOUNT.md, "Errors").

use crate::client::ClientError;

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
    #[error("bad file handle")]
    BadHandle,
    #[error("already exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("cannot move this across the tree")]
    CrossDevice,
    #[error("registry: {0}")]
    Registry(#[from] ClientError),
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
            FsError::Invalid(_) => libc::EINVAL,
            FsError::BadHandle => libc::EBADF,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::CrossDevice => libc::EXDEV,
            FsError::Registry(e) => match e {
                ClientError::NotFound => libc::ENOENT,
                ClientError::Unauthorized | ClientError::Forbidden => libc::EACCES,
                ClientError::Conflict => libc::EEXIST,
                // The registry refused what we sent: the caller's input was wrong.
                ClientError::Refused(_) => libc::EINVAL,
                // Checksum mismatch, 5xx, connection refused, timeout: after retries.
                ClientError::Server(_)
                | ClientError::Transport(_)
                | ClientError::Timeout
                | ClientError::Protocol(_) => libc::EIO,
            },
        }
    }

    /// Whether this failure is expected in normal use (not worth more than a debug line).
    pub fn is_routine(&self) -> bool {
        matches!(
            self,
            FsError::NotFound | FsError::Registry(ClientError::NotFound)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_documented_errno() {
        assert_eq!(FsError::NotFound.errno(), libc::ENOENT);
        assert_eq!(
            FsError::Registry(ClientError::NotFound).errno(),
            libc::ENOENT
        );
        assert_eq!(
            FsError::Registry(ClientError::Forbidden).errno(),
            libc::EACCES
        );
        assert_eq!(
            FsError::Registry(ClientError::Unauthorized).errno(),
            libc::EACCES
        );
        assert_eq!(
            FsError::Registry(ClientError::Conflict).errno(),
            libc::EEXIST
        );
        assert_eq!(
            FsError::Registry(ClientError::Server(503)).errno(),
            libc::EIO
        );
        assert_eq!(FsError::Registry(ClientError::Timeout).errno(), libc::EIO);
        assert_eq!(
            FsError::Registry(ClientError::Transport("refused".into())).errno(),
            libc::EIO
        );
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        assert_eq!(FsError::NotPermitted("x").errno(), libc::EPERM);
        assert_eq!(FsError::Invalid("x").errno(), libc::EINVAL);
    }
}
