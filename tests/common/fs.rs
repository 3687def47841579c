//! The filesystem logic without a kernel mount: a [`RegistryFs`] over a test server, and walks
//! from its root.

use std::time::Duration;

use regfs::client::{ClientConfig, RegistryClient};
use regfs::mount::cache::Clock;
use regfs::mount::fs::Entry;
use regfs::mount::inode::ROOT_INO;
use regfs::mount::{FsConfig, FsError, RegistryFs};

/// A filesystem over the registry at `url`.
pub fn registry_fs(
    url: &str,
    credentials: Option<(&str, &str)>,
    config: FsConfig,
    timeout: Duration,
) -> RegistryFs {
    registry_fs_with_clock(url, credentials, config, timeout, Clock::system())
}

/// A filesystem over the registry at `url` whose cached facts expire by `clock`.
pub fn registry_fs_with_clock(
    url: &str,
    credentials: Option<(&str, &str)>,
    config: FsConfig,
    timeout: Duration,
    clock: Clock,
) -> RegistryFs {
    let client = RegistryClient::new(ClientConfig {
        url: url.to_string(),
        credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        timeout,
    })
    .unwrap();
    RegistryFs::with_clock(std::sync::Arc::new(client), config, clock)
}

/// Looks up every component of `path` from the root; the root itself for "".
pub async fn walk(fs: &RegistryFs, path: &str) -> Result<Entry, FsError> {
    let mut entry = fs.getattr(ROOT_INO).await?;
    for name in path.split('/').filter(|n| !n.is_empty()) {
        entry = fs.lookup(entry.attr.ino, name).await?;
    }
    Ok(entry)
}

/// Waits for `fut`, failing the test if it takes longer than a minute: a guard against a hang,
/// far above anything the suite waits for, never a measure of speed.
pub async fn no_hang<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still waiting after a minute"),
    }
}
