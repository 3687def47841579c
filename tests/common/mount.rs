//! A real FUSE mount of a [`RegistryFs`] in a temporary directory, unmounted on drop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regfs::mount::{FsConfig, Mounted, RegistryFs};

/// A mounted registry. Fields drop in order: the session first, then its directory.
pub struct TestMount {
    mounted: Option<Mounted>,
    rt: Option<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
}

impl TestMount {
    /// Mounts `url` with default settings and the given credentials.
    pub fn new(url: &str, credentials: Option<(&str, &str)>) -> Self {
        Self::with_config(
            url,
            credentials,
            FsConfig::default(),
            Duration::from_secs(5),
        )
    }

    pub fn with_config(
        url: &str,
        credentials: Option<(&str, &str)>,
        fs_config: FsConfig,
        timeout: Duration,
    ) -> Self {
        Self::with_fs(super::fs::registry_fs(url, credentials, fs_config, timeout))
    }

    /// Mounts a filesystem built by the caller.
    pub fn with_fs(fs: RegistryFs) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fs = Arc::new(fs);
        let dir = tempfile::tempdir().unwrap();
        let mounted =
            regfs::mount::mount_fs(fs, dir.path(), rt.handle().clone(), 4, false, None).unwrap();
        TestMount {
            mounted: Some(mounted),
            rt: Some(rt),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn fs(&self) -> &Arc<RegistryFs> {
        self.mounted.as_ref().unwrap().fs()
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            if let Err(e) = m.unmount() {
                eprintln!("unmount failed: {e}");
            }
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
