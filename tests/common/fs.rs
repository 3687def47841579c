//! The filesystem logic without a kernel mount: a [`RegistryFs`] over a test server, and walks
//! from its root.

use std::time::Duration;

use regfs::client::{ClientConfig, RegistryClient};
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
    let client = RegistryClient::new(ClientConfig {
        url: url.to_string(),
        credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        timeout,
    })
    .unwrap();
    RegistryFs::new(client, config)
}

/// Looks up every component of `path` from the root; the root itself for "".
pub async fn walk(fs: &RegistryFs, path: &str) -> Result<Entry, FsError> {
    let mut entry = fs.getattr(ROOT_INO).await?;
    for name in path.split('/').filter(|n| !n.is_empty()) {
        entry = fs.lookup(entry.attr.ino, name).await?;
    }
    Ok(entry)
}
