//! Running a mount: start-up checks, the embedded registry when no `--registry` is given, the
//! FUSE session, kernel tuning, and a clean end on SIGINT, SIGTERM or `fusermount3 -u`.
//!
//! Start-up checks fail fast with a message that names the cause: the mountpoint is checked
//! first (missing, not empty, already mounted), before anything starts; then the registry is
//! asked once whether it answers and accepts the credentials, unless `--no-check`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::fs::{FsConfig, RegistryFs};
use super::fuse::FuseAdapter;
use crate::client::{ClientConfig, RegistryClient};
use crate::mount::backend::RegistryBackend;
use crate::mount::backend::embedded::EmbeddedBackend;
use crate::server::ServeConfig;

/// Everything `regfs mount` needs, validated.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub mountpoint: PathBuf,
    /// The registry to mount; `None` serves the embedded one from `serve`.
    pub registry: Option<String>,
    /// The embedded registry's settings (used when `registry` is `None`).
    pub serve: ServeConfig,
    pub credentials: Option<(String, String)>,
    pub fs: FsConfig,
    pub timeout: Duration,
    pub threads: usize,
    pub allow_other: bool,
    /// Raise the kernel's readahead for the mount (root only; best effort).
    pub readahead_kb: Option<u32>,
    /// Mount on a directory that is not empty or is already a mount point.
    pub allow_non_empty: bool,
    /// Ask the registry at start-up whether it answers and takes the credentials.
    pub check_registry: bool,
}

/// Longest wait for the registry at start-up (or `--timeout`, if shorter).
pub const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a mount could not run.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot start the embedded registry: {0}")]
    Serve(#[from] crate::server::ServeError),
    #[error("registry client: {0}")]
    Client(#[from] crate::client::ClientError),
    #[error("cannot mount {path}: {source}")]
    Mount {
        path: String,
        source: std::io::Error,
    },
    #[error("mountpoint {0} is not an existing directory")]
    Mountpoint(String),
    #[error(
        "mountpoint {0} is not empty; mount on an empty directory, or pass --allow-non-empty \
         to hide what it holds while mounted"
    )]
    NotEmpty(String),
    #[error(
        "mountpoint {0} is already a mount point; unmount it first (fusermount3 -u or \
         umount), or pass --allow-non-empty to mount over it"
    )]
    AlreadyMounted(String),
    #[error(
        "registry unreachable at {url}: {cause}; check --registry, or pass --no-check to \
         mount before it answers"
    )]
    Unreachable { url: String, cause: String },
    #[error(
        "credentials refused by {url} for user {user:?}; check --user and --password \
         (REGFS_USER, REGFS_PASSWORD, ~/.docker/config.json)"
    )]
    CredentialsRefused { url: String, user: String },
    #[error(
        "no v1 registry answers at {url} ({cause}); check --registry, or pass --no-check to \
         mount anyway"
    )]
    NotARegistry { url: String, cause: String },
    #[error("the registry at {url} refused anonymous access; give --user and --password")]
    AnonymousRefused { url: String },
    #[error("{} change(s) did not reach the registry: {}", .0.len(), .0.join("; "))]
    Unfinished(Vec<String>),
    #[error("unmounting {path} failed: {source}")]
    Unmount {
        path: String,
        source: std::io::Error,
    },
}

/// A mounted filesystem; unmounted when dropped or by [`Mounted::unmount`].
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    path: PathBuf,
    fs: Arc<RegistryFs>,
}

impl Mounted {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn fs(&self) -> &Arc<RegistryFs> {
        &self.fs
    }

    /// Whether the session ended by itself (an external `fusermount3 -u`).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and waits for the session to end; falls back to a lazy unmount when the
    /// mountpoint is busy.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if session.guard.is_finished() {
            // Unmounted from outside. Dropping the session would try the unmount again and
            // log its expected failure as a warning; asking for it here keeps that quiet.
            if let Err(e) = session.umount_and_join() {
                tracing::debug!(error = %e, "already unmounted");
            }
            return Ok(());
        }
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "unmount failed; detaching lazily");
                lazy_unmount(&self.path).map_err(|source| MountError::Unmount {
                    path: self.path.display().to_string(),
                    source,
                })
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::error!(error = %e, "could not unmount");
        }
    }
}

/// `fusermount3 -u -z`, then `umount -l`.
fn lazy_unmount(path: &std::path::Path) -> std::io::Result<()> {
    for (cmd, args) in [("fusermount3", ["-u", "-z"]), ("umount", ["-l", ""])] {
        let mut c = std::process::Command::new(cmd);
        for a in args.iter().filter(|a| !a.is_empty()) {
            c.arg(a);
        }
        if let Ok(status) = c.arg(path).status() {
            if status.success() {
                return Ok(());
            }
        }
    }
    Err(std::io::Error::other("lazy unmount failed"))
}

/// Mounts `fs` at `path` with a FUSE session of `threads` workers, replying from `rt`.
pub fn mount_fs(
    fs: Arc<RegistryFs>,
    path: &std::path::Path,
    rt: tokio::runtime::Handle,
    threads: usize,
    allow_other: bool,
    readahead_kb: Option<u32>,
) -> Result<Mounted, MountError> {
    if !path.is_dir() {
        return Err(MountError::Mountpoint(path.display().to_string()));
    }
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("regfs".into()),
        fuser::MountOption::Subtype("regfs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoAtime,
    ];
    if fs.read_only() {
        config.mount_options.push(fuser::MountOption::RO);
    }
    if allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    let adapter = FuseAdapter::new(fs.clone(), rt);
    let session =
        fuser::spawn_mount(adapter, path, &config).map_err(|source| MountError::Mount {
            path: path.display().to_string(),
            source,
        })?;
    if let Some(kb) = readahead_kb {
        raise_readahead(path, kb);
    }
    Ok(Mounted {
        session: Some(session),
        path: path.to_path_buf(),
        fs,
    })
}

/// The kernel asks a FUSE filesystem for 128 KiB of readahead at a time unless root raises the
/// mount's bdi setting; larger requests mean far fewer round trips per GiB.
fn raise_readahead(path: &std::path::Path, kb: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&knob, kb.to_string()) {
        Ok(()) => tracing::debug!(knob, kb, "raised readahead"),
        Err(e) => tracing::debug!(knob, error = %e, "could not raise readahead"),
    }
}

/// The uid and gid this process runs as (owner of every file in the mount).
pub fn current_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}

/// Checks the mountpoint before anything starts: an existing directory, empty and not a mount
/// point already, unless `allow_non_empty`.
pub fn check_mountpoint(path: &Path, allow_non_empty: bool) -> Result<(), MountError> {
    let shown = || path.display().to_string();
    // A dead FUSE mount fails even a stat (ENOTCONN): it is a mount point all the same.
    let canonical = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(MountError::AlreadyMounted(shown()));
        }
        Err(_) => return Err(MountError::Mountpoint(shown())),
    };
    if !canonical.is_dir() {
        return Err(MountError::Mountpoint(shown()));
    }
    if allow_non_empty {
        return Ok(());
    }
    if mount_points().contains(&canonical) {
        return Err(MountError::AlreadyMounted(shown()));
    }
    let mut entries = std::fs::read_dir(&canonical).map_err(|source| MountError::Mount {
        path: shown(),
        source,
    })?;
    if entries.next().is_some() {
        return Err(MountError::NotEmpty(shown()));
    }
    Ok(())
}

/// Asks the registry whether it answers and takes the client's credentials, within
/// [`STARTUP_CHECK_TIMEOUT`] or `--timeout`, whichever is shorter.
pub async fn check_registry(registry: &dyn RegistryBackend) -> Result<(), MountError> {
    use crate::mount::backend::BackendError as ClientError;
    let url = registry.location().to_string();
    match registry.check_access(STARTUP_CHECK_TIMEOUT).await {
        Ok(()) => Ok(()),
        Err(ClientError::Unauthorized | ClientError::Forbidden) => match registry.user() {
            Some(user) => Err(MountError::CredentialsRefused {
                url,
                user: user.to_string(),
            }),
            None => Err(MountError::AnonymousRefused { url }),
        },
        Err(ClientError::Transport(cause)) => Err(MountError::Unreachable { url, cause }),
        Err(ClientError::Timeout) => Err(MountError::Unreachable {
            url,
            cause: "no answer in time".into(),
        }),
        Err(e) => Err(MountError::NotARegistry {
            url,
            cause: e.to_string(),
        }),
    }
}

/// Every mount point of this process's namespace, from `/proc/self/mountinfo`.
pub fn mount_points() -> Vec<PathBuf> {
    std::fs::read("/proc/self/mountinfo")
        .map(|info| parse_mount_points(&info))
        .unwrap_or_default()
}

/// The mount points (fifth field) of mountinfo text, `\NNN` octal escapes decoded.
fn parse_mount_points(info: &[u8]) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    info.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsString::from_vec(unescape_mountinfo(field))))
        .collect()
}

/// Decodes the kernel's octal escapes of a mountinfo field (`\040` space, `\011` tab,
/// `\012` newline, `\134` backslash); anything else is kept as it is.
pub fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')))
            .and_then(|value| u8::try_from(value).ok());
        match (field[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Runs a mount until a signal or an external unmount. `announce` receives the registry URL
/// once it is known (the embedded server's, or `--registry`).
pub async fn run(config: MountConfig, announce: impl FnOnce(&str)) -> Result<(), MountError> {
    // Before anything starts (the embedded server included).
    check_mountpoint(&config.mountpoint, config.allow_non_empty)?;
    // Caught from here on: a signal during start-up still unmounts and exits cleanly.
    let signal = crate::server::ShutdownSignal::install().map_err(|source| MountError::Mount {
        path: config.mountpoint.display().to_string(),
        source,
    })?;
    let mut in_process = None;
    let (stop_server, server_task, url, credentials) = match &config.registry {
        Some(url) => (None, None, url.clone(), config.credentials.clone()),
        None => {
            let server = bind_embedded(&config.serve).await?;
            let url = server.url();
            in_process = Some(server.registry().clone());
            let creds = config.credentials.clone().or_else(|| {
                config
                    .serve
                    .admin
                    .as_ref()
                    .map(|(u, p)| (u.to_string(), p.clone()))
            });
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(server.serve(async {
                let _ = rx.await;
            }));
            (Some(tx), Some(task), url, creds)
        }
    };
    let client = RegistryClient::new(ClientConfig {
        url: url.clone(),
        credentials,
        timeout: config.timeout,
    })?;
    // The one place the backend is chosen; everything after sees only the trait. Layer bytes
    // of the registry in this process need no trip through a socket (and on a local
    // directory, its stored files can be handed to the kernel).
    let backend: Arc<dyn RegistryBackend> = match in_process {
        Some(registry) => Arc::new(EmbeddedBackend::new(client, registry)),
        None => Arc::new(client),
    };
    // Checked before the URL is announced: a start that fails prints nothing on stdout.
    if config.registry.is_some() && config.check_registry {
        check_registry(backend.as_ref()).await?;
    }
    announce(&url);
    if !config.check_registry || config.registry.is_none() {
        if let Err(e) = backend.ping().await {
            tracing::warn!(%url, error = %e, "registry not answering yet; mounting anyway");
        }
    }
    let mut fs_config = config.fs.clone();
    if config.registry.is_none() && fs_config.cache_dir.is_some() {
        // The embedded registry's URL changes with a taken port; its storage is what it is.
        match embedded_scope(&config.serve.storage) {
            Some(scope) => fs_config.cache_scope = Some(scope),
            None => {
                tracing::warn!(
                    "--cache-dir is not used with --memory: no image outlives the mount"
                );
                fs_config.cache_dir = None;
            }
        }
    }
    // Off the runtime: opening a disk cache lists what it holds.
    let fs = tokio::task::spawn_blocking(move || Arc::new(RegistryFs::new(backend, fs_config)))
        .await
        .map_err(|e| MountError::Mount {
            path: config.mountpoint.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let mounted = {
        let fs = fs.clone();
        let path = config.mountpoint.clone();
        let rt = tokio::runtime::Handle::current();
        let (threads, allow_other, ra) = (config.threads, config.allow_other, config.readahead_kb);
        tokio::task::spawn_blocking(move || mount_fs(fs, &path, rt, threads, allow_other, ra))
            .await
            .map_err(|e| MountError::Mount {
                path: config.mountpoint.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })??
    };
    tracing::info!(mountpoint = %config.mountpoint.display(), %url, "mounted");
    let mut signal = std::pin::pin!(signal.recv());
    loop {
        tokio::select! {
            () = &mut signal => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if mounted.is_finished() {
                    tracing::info!("unmounted from outside");
                    break;
                }
            }
        }
    }
    let result = tokio::task::spawn_blocking(move || mounted.unmount())
        .await
        .map_err(|e| MountError::Unmount {
            path: config.mountpoint.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    if let Some(tx) = stop_server {
        let _ = tx.send(());
    }
    if let Some(task) = server_task {
        let _ = task.await;
    }
    // Blocks read last are still on their way to the disk cache.
    fs.flush_disk_cache().await;
    result?;
    // Whatever was written but never committed is reported, and the exit code says so.
    let unfinished = fs.unfinished();
    if unfinished.is_empty() {
        Ok(())
    } else {
        for what in &unfinished {
            tracing::error!("{what}");
        }
        Err(MountError::Unfinished(unfinished))
    }
}

/// What the embedded registry's disk cache entries belong to; `None` for memory storage.
fn embedded_scope(storage: &crate::storage::StorageConfig) -> Option<String> {
    use crate::storage::StorageConfig;
    match storage {
        StorageConfig::Local(dir) => {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            Some(format!("embedded file://{}", dir.display()))
        }
        StorageConfig::S3(s3) => Some(format!(
            "embedded s3://{}/{} at {}",
            s3.bucket,
            s3.prefix,
            s3.endpoint.as_deref().unwrap_or("aws")
        )),
        StorageConfig::Memory => None,
    }
}

/// Binds the embedded registry on its address, or on a free port when that one is taken.
async fn bind_embedded(
    serve: &ServeConfig,
) -> Result<crate::server::BoundServer, crate::server::ServeError> {
    match crate::server::bind(serve).await {
        Ok(s) => Ok(s),
        Err(crate::server::ServeError::Bind { source, .. })
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            let mut fallback = serve.clone();
            fallback.listen.set_port(0);
            tracing::info!(wanted = %serve.listen, "address in use; picking a free port");
            crate::server::bind(&fallback).await
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mountinfo(b"/mnt/dir\\040with\\040space"),
            b"/mnt/dir with space"
        );
        assert_eq!(unescape_mountinfo(b"/a\\011b\\012c\\134d"), b"/a\tb\nc\\d");
        // Not an escape: kept as it is.
        assert_eq!(unescape_mountinfo(b"/a\\9x\\"), b"/a\\9x\\");
        let info = b"36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - fuse.regfs regfs rw\n\
                     37 35 98:0 / /plain rw - ext4 /dev/sda1 rw\n";
        assert_eq!(
            parse_mount_points(info),
            [PathBuf::from("/mnt/a b"), PathBuf::from("/plain")]
        );
    }
}
