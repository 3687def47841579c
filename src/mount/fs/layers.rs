//! Layer reads: blocks from the budgeted block cache (and the disk cache behind it) over the
//! backend, read-ahead that grows with a sequential reader, and a cold first read that asks
//! for exactly its bytes so the first byte is not held up by whole blocks. How a handle counts
//! as sequential, and how large its window may be, is the caller's (`RegistryFs::read`).

use std::sync::Arc;

use bytes::Bytes;

use super::{FsError, Result};
use crate::mount::backend::{BackendError, RegistryBackend};
use crate::mount::cache::BlockCache;
use crate::names::ImageId;

/// The block cache with the backend its blocks come from.
#[derive(Debug)]
pub(super) struct LayerReads {
    backend: Arc<dyn RegistryBackend>,
    blocks: Arc<BlockCache>,
}

impl LayerReads {
    pub(super) fn new(backend: Arc<dyn RegistryBackend>, blocks: Arc<BlockCache>) -> Self {
        LayerReads { backend, blocks }
    }

    /// The block cache (its budget, block size and counters; passthrough completes layers on
    /// disk through it).
    pub(super) fn blocks(&self) -> &Arc<BlockCache> {
        &self.blocks
    }

    /// Bytes `range` of layer `id` (of `layer_size` bytes) for a reader whose read is
    /// `sequential` (or its `first`), with read-ahead of `window` bytes.
    pub(super) async fn read(
        &self,
        id: &ImageId,
        layer_size: u64,
        range: std::ops::Range<u64>,
        sequential: bool,
        window: u64,
        first: bool,
    ) -> Result<Bytes> {
        let bs = self.blocks.block_size();
        let first_block = range.start / bs;
        let last_block = (range.end - 1) / bs;
        // Read ahead of a sequential reader; the window grows with each sequential read.
        let ahead_end = (range.end + window).min(layer_size);
        let ahead = (last_block + 1)..=(ahead_end.saturating_sub(1) / bs);
        // A cold first read asks for exactly its bytes first, so the first byte is not held up
        // by whole blocks; its block and the window behind it follow in the background, so
        // these bytes end up cached too.
        if first && !self.blocks.is_local(id, first_block) {
            let data = self.backend.layer_range(id, range).await;
            self.prefetch(id, layer_size, first_block..=first_block);
            self.prefetch(id, layer_size, ahead);
            return data.map_err(FsError::from);
        }
        if sequential || first {
            self.prefetch(id, layer_size, ahead);
        }
        if first_block == last_block {
            let block = self
                .blocks
                .block(&self.backend, id, layer_size, first_block)
                .await?;
            let start = (range.start - first_block * bs) as usize;
            let end = (range.end - first_block * bs) as usize;
            if sequential && end == block.len() {
                self.blocks.consumed(id, first_block);
            }
            return slice(&block, start, end);
        }
        let mut out = bytes::BytesMut::with_capacity((range.end - range.start) as usize);
        for index in first_block..=last_block {
            let block = self
                .blocks
                .block(&self.backend, id, layer_size, index)
                .await?;
            let block_start = index * bs;
            let start = range.start.max(block_start) - block_start;
            let end = range.end.min(block_start + block.len() as u64) - block_start;
            out.extend_from_slice(&slice(&block, start as usize, end as usize)?);
            if sequential && end as usize == block.len() {
                self.blocks.consumed(id, index);
            }
        }
        Ok(out.freeze())
    }

    /// Starts fetching the blocks in `blocks` that are neither cached nor on their way.
    pub(super) fn prefetch(
        &self,
        id: &ImageId,
        layer_size: u64,
        blocks: std::ops::RangeInclusive<u64>,
    ) {
        for index in blocks {
            if !self.blocks.is_present(id, index) {
                drop(self.blocks.block(&self.backend, id, layer_size, index));
            }
        }
    }
}

fn slice(block: &Bytes, start: usize, end: usize) -> Result<Bytes> {
    if start > end || end > block.len() {
        return Err(FsError::Registry(BackendError::Protocol(
            "layer shorter than its size".into(),
        )));
    }
    Ok(block.slice(start..end))
}
