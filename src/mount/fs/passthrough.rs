//! Layers the kernel reads straight from a file (FUSE passthrough): when the mount was granted
//! passthrough at INIT and a layer is on disk as one file, `open` hands the kernel that file and
//! no read of the handle reaches this process. The file is the stored layer itself when the
//! registry runs in this process on a local directory, else the disk cache's copy. Without
//! passthrough, a handle of such a registry's layer still reads the stored file, not HTTP.
//!
//! The kernel puts each inode in one of two modes while it is open, and fails (EIO) an open
//! that asks for the other: all opens cached (our reads, `KEEP_CACHE`), or all passthrough with
//! one backing file. So the choice is per inode, made under one lock, and only ever follows the
//! handles already open: passthrough only when no cached handle is open, and then every further
//! open shares the same file (kept here while any passthrough handle is open, so an eviction
//! of the file in between changes nothing). Our counts drop at `release`, after the kernel's,
//! so they never allow a mix the kernel would refuse.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Handle, Opened, RegistryFs, lock};
use crate::mount::tree::Node;
use crate::names::ImageId;

/// An open layer the kernel is to read from `file` (FUSE passthrough).
#[derive(Debug, Clone)]
pub struct Passthrough {
    /// The inode: every passthrough open of one inode must register the same backing file,
    /// so the adapter shares one registration per inode.
    pub ino: u64,
    pub file: Arc<File>,
}

/// How the kernel reads one open layer handle.
#[derive(Debug)]
pub(super) enum LayerOpen {
    /// Through `read` (and the kernel's page cache of the FUSE file): from the file when there
    /// is one (the stored layer of a registry in this process, or a whole layer whose
    /// passthrough the kernel refused), else from the registry.
    Cached(u64, Option<Arc<File>>),
    /// From the backing file, which `read` also uses if the kernel asks anyway.
    Passthrough(u64, Arc<File>),
}

impl LayerOpen {
    fn ino(&self) -> u64 {
        match self {
            LayerOpen::Cached(ino, _) | LayerOpen::Passthrough(ino, _) => *ino,
        }
    }

    /// The whole layer as a local file, if `read` has one to take bytes from.
    pub(super) fn file(&self) -> Option<&Arc<File>> {
        match self {
            LayerOpen::Cached(_, file) => file.as_ref(),
            LayerOpen::Passthrough(_, file) => Some(file),
        }
    }
}

/// The open handles of one layer inode, by mode.
#[derive(Debug, Default)]
pub(super) struct InodeOpens {
    cached: u32,
    passthrough: u32,
    /// The backing file while `passthrough > 0`.
    file: Option<Arc<File>>,
}

impl RegistryFs {
    /// Records whether the kernel granted passthrough at INIT; whole layers are assembled on
    /// disk only when it did.
    pub fn set_passthrough(&self, granted: bool) {
        self.passthrough.store(granted, Ordering::Relaxed);
        if let Some(disk) = &self.disk {
            disk.set_whole_layers(granted);
        }
    }

    /// Whether layer opens may currently be answered with passthrough.
    pub fn passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    /// `read` requests this filesystem has answered.
    pub fn read_requests(&self) -> u64 {
        self.read_requests.load(Ordering::Relaxed)
    }

    /// Opens layer `id` (inode `ino`, `layer_size` bytes) for reading, with passthrough when
    /// possible.
    pub(super) async fn open_layer(
        &self,
        ino: u64,
        node: Node,
        id: &ImageId,
        layer_size: u64,
    ) -> Opened {
        let cached_open = lock(&self.layer_opens)
            .get(&ino)
            .is_some_and(|o| o.cached > 0);
        // The files the registry in this process streams from are complete and never
        // rewritten (a store renames new objects into place). Opened whether or not the kernel
        // reads it: without passthrough, `read` takes the bytes from it.
        let stored = self.backend.local_layer_file(id).await.map(Arc::new);
        let whole = if self.passthrough() && !cached_open {
            match (&stored, &self.disk) {
                (Some(file), _) => Some(file.clone()),
                (None, Some(disk)) => disk.layer_file(id, layer_size).await.map(Arc::new),
                (None, None) => None,
            }
        } else {
            if let Some(disk) = &self.disk {
                // Not usable now, but the next open may be.
                disk.assemble_if_complete(id, layer_size);
            }
            None
        };
        let mode = {
            let mut opens = lock(&self.layer_opens);
            let o = opens.entry(ino).or_default();
            let file = match (&o.file, whole) {
                (Some(shared), _) if o.passthrough > 0 => Some(shared.clone()),
                (_, Some(file)) if o.cached == 0 => {
                    o.file = Some(file.clone());
                    Some(file)
                }
                _ => None,
            };
            match file {
                Some(file) => {
                    o.passthrough += 1;
                    LayerOpen::Passthrough(ino, file)
                }
                None => {
                    o.cached += 1;
                    LayerOpen::Cached(ino, stored)
                }
            }
        };
        let passthrough = match &mode {
            LayerOpen::Passthrough(ino, file) => Some(Passthrough {
                ino: *ino,
                file: file.clone(),
            }),
            LayerOpen::Cached(..) => None,
        };
        let mut handle = Handle::new(node);
        handle.layer = Some(mode);
        let fh = self.add_handle(handle);
        Opened {
            fh,
            keep_cache: true,
            passthrough,
        }
    }

    /// The adapter could not register the backing file of handle `fh`: it is served as a
    /// cached handle instead. A refusal for want of privilege stops passthrough for the mount.
    pub fn passthrough_refused(&self, fh: u64, error: &std::io::Error) {
        tracing::debug!(%error, "passthrough refused; reading through the daemon");
        if error.raw_os_error() == Some(libc::EPERM) {
            self.set_passthrough(false);
        }
        let mut handles = lock(&self.handles);
        let Some(h) = handles.get_mut(&fh) else {
            return;
        };
        if let Some(LayerOpen::Passthrough(ino, file)) = &h.layer {
            let ino = *ino;
            // The file is still a whole copy of the layer, for `read` to use.
            h.layer = Some(LayerOpen::Cached(ino, Some(file.clone())));
            let mut opens = lock(&self.layer_opens);
            let o = opens.entry(ino).or_default();
            o.passthrough = o.passthrough.saturating_sub(1);
            if o.passthrough == 0 {
                o.file = None;
            }
            o.cached += 1;
        }
    }

    /// Forgets a released layer handle's mode.
    pub(super) fn end_layer_open(&self, open: &LayerOpen) {
        let ino = open.ino();
        let mut opens = lock(&self.layer_opens);
        let Some(o) = opens.get_mut(&ino) else {
            return;
        };
        match open {
            LayerOpen::Cached(..) => o.cached = o.cached.saturating_sub(1),
            LayerOpen::Passthrough(..) => {
                o.passthrough = o.passthrough.saturating_sub(1);
                if o.passthrough == 0 {
                    o.file = None;
                }
            }
        }
        if o.cached == 0 && o.passthrough == 0 {
            opens.remove(&ino);
        }
    }
}

impl RegistryFs {
    /// After a handle read all of layer `id`: puts the blocks the disk cache lacks (writes it
    /// dropped while the reader was faster than the disk) there, from memory or the registry,
    /// so the layer becomes one file for the next open. In the background, one layer at a time,
    /// one block at a time; skipped when another layer is being completed.
    pub(super) fn complete_layer(&self, id: &ImageId, layer_size: u64) {
        let Some(disk) = self.disk.clone() else {
            return;
        };
        let missing = disk.missing_blocks(id, layer_size);
        if missing.is_empty() {
            disk.assemble_if_complete(id, layer_size);
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(permit) = self.completing.clone().try_acquire_owned() else {
            return;
        };
        let (blocks, backend, id) = (
            self.layers.blocks().clone(),
            self.backend.clone(),
            id.clone(),
        );
        tracing::debug!(%id, missing = missing.len(), "completing the layer on disk");
        rt.spawn(async move {
            for index in missing {
                match blocks.block(&backend, &id, layer_size, index).await {
                    Ok(data) => disk.store_block_waiting(&id, layer_size, index, data).await,
                    Err(e) => {
                        tracing::debug!(%id, error = %e, "layer left incomplete on disk");
                        break;
                    }
                }
            }
            // Both hold the disk cache (and its lock), which must be free once the permit is.
            drop((disk, blocks));
            drop(permit);
        });
    }

    /// Waits for the layer completion under way, if any.
    pub(super) async fn wait_completion(&self) {
        if let Ok(p) = self.completing.acquire().await {
            drop(p);
        }
    }
}

/// `len` bytes at `offset` of a backing file; `None` on any error (the caller then reads the
/// usual way).
pub(super) async fn read_backing(file: Arc<File>, offset: u64, len: u64) -> Option<Bytes> {
    match crate::storage::local_read::read_exact(file, offset..offset + len).await {
        Ok(data) => Some(data),
        Err(error) => {
            tracing::warn!(%error, "backing file read failed");
            None
        }
    }
}
