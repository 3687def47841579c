//! Streaming a byte range of a local file to a client without a thread hop per chunk.
//!
//! A layer GET from the local backend is the server's hottest path. `tokio::fs` sends every
//! read through the blocking pool and copies the bytes once more out of its own buffer; at
//! 64 concurrent downloads those hand-offs (two context switches per chunk) and the copy cost
//! more CPU than the transfer itself. Here each chunk is first read with `preadv2(RWF_NOWAIT)`
//! straight into the buffer that goes to the socket: that succeeds only for bytes already in
//! the page cache, so it can never block the runtime on the disk. Only bytes that are not cached
//! (`EAGAIN`) go through the blocking pool, where the read also starts the kernel's readahead
//! for the chunks behind them. The mount of an embedded registry reads its stored layers the
//! same way, one whole range per FUSE read.

use std::fs::File;
use std::io::IoSliceMut;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use rustix::io::{Errno, ReadWriteFlags};

use super::{ByteStream, StorageError};

/// Bytes per chunk handed to the connection: large enough that syscalls are few, small enough
/// that 4,096 connections cannot hold much memory.
const CHUNK: usize = 512 * 1024;

/// Streams `range` of `file`; fails if the file ends before the range does.
pub fn stream(file: File, range: Range<u64>) -> ByteStream {
    let reader = Reader {
        file: Arc::new(file),
        pos: range.start,
        end: range.end,
        nowait: true,
    };
    futures::stream::try_unfold(reader, |mut r| async move {
        if r.pos >= r.end {
            return Ok(None);
        }
        let chunk = r.next_chunk().await?;
        Ok(Some((chunk, r)))
    })
    .boxed()
}

struct Reader {
    file: Arc<File>,
    pos: u64,
    end: u64,
    /// Cleared when the filesystem does not support `RWF_NOWAIT`: every read then takes the
    /// blocking pool, as `tokio::fs` would.
    nowait: bool,
}

impl Reader {
    async fn next_chunk(&mut self) -> Result<Bytes, StorageError> {
        let want = usize::try_from(self.end - self.pos)
            .unwrap_or(CHUNK)
            .min(CHUNK);
        let mut buf = vec![0u8; want];
        if self.nowait {
            match read_cached(&self.file, &mut buf, self.pos)? {
                Cached::Read(n) => {
                    buf.truncate(n);
                    self.pos += n as u64;
                    return Ok(Bytes::from(buf));
                }
                Cached::Miss => {}
                Cached::Unsupported => self.nowait = false,
            }
        }
        let file = self.file.clone();
        let pos = self.pos;
        let buf = tokio::task::spawn_blocking(move || read_at_most(&file, buf, 0, pos))
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        if buf.is_empty() {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "stored object is shorter than its recorded size",
            )));
        }
        self.pos += buf.len() as u64;
        Ok(Bytes::from(buf))
    }
}

/// Exactly `range` of `file`: the part in the page cache read on the calling thread, the rest on
/// the blocking pool. A file that ends before the range does is an error.
pub async fn read_exact(file: Arc<File>, range: Range<u64>) -> Result<Bytes, StorageError> {
    let len = usize::try_from(range.end.saturating_sub(range.start))
        .map_err(|_| StorageError::Io(std::io::Error::other("range too large")))?;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match read_cached(&file, &mut buf[filled..], range.start + filled as u64)? {
            Cached::Read(n) => filled += n,
            Cached::Miss | Cached::Unsupported => break,
        }
    }
    if filled < len {
        let pos = range.start;
        buf = tokio::task::spawn_blocking(move || read_at_most(&file, buf, filled, pos))
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
    }
    if buf.len() < len {
        return Err(StorageError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "stored object is shorter than the range read",
        )));
    }
    Ok(Bytes::from(buf))
}

/// What one read that must not wait for the disk gave.
enum Cached {
    /// Bytes from the page cache.
    Read(usize),
    /// Nothing cached, or the end of the file (some kernels say 0 for both): a blocking read
    /// tells which.
    Miss,
    /// The filesystem has no `RWF_NOWAIT`.
    Unsupported,
}

/// Reads into `buf` at `pos` what the page cache holds, without blocking.
fn read_cached(file: &File, buf: &mut [u8], pos: u64) -> Result<Cached, StorageError> {
    match rustix::io::preadv2(
        file,
        &mut [IoSliceMut::new(buf)],
        pos,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) if n > 0 => Ok(Cached::Read(n)),
        Ok(_) | Err(Errno::AGAIN) => Ok(Cached::Miss),
        Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => Ok(Cached::Unsupported),
        Err(e) => Err(StorageError::Io(e.into())),
    }
}

/// Fills `buf` past its first `filled` bytes, which hold the file from `pos`, stopping early
/// only at the end of the file.
fn read_at_most(
    file: &File,
    mut buf: Vec<u8>,
    mut filled: usize,
    pos: u64,
) -> std::io::Result<Vec<u8>> {
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::io::Write;

    fn file_with(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    async fn collect(s: ByteStream) -> Result<Vec<u8>, StorageError> {
        let chunks: Vec<Bytes> = s.try_collect().await?;
        Ok(chunks.concat())
    }

    #[tokio::test]
    async fn streams_exactly_the_range_across_chunks() {
        let data: Vec<u8> = (0..(3 * CHUNK + 123)).map(|i| (i % 251) as u8).collect();
        for range in [
            0..data.len(),
            1..2,
            7..(2 * CHUNK + 5),
            CHUNK..(3 * CHUNK + 123),
        ] {
            let got = collect(stream(
                file_with(&data),
                range.start as u64..range.end as u64,
            ))
            .await
            .unwrap();
            assert_eq!(got, &data[range.clone()], "{range:?}");
        }
    }

    #[tokio::test]
    async fn read_exact_gives_the_range_or_an_error() {
        let data: Vec<u8> = (0..(CHUNK + 77)).map(|i| (i % 253) as u8).collect();
        let file = Arc::new(file_with(&data));
        for range in [0..data.len(), 5..6, 3..(CHUNK + 77), 10..10] {
            let got = read_exact(file.clone(), range.start as u64..range.end as u64)
                .await
                .unwrap();
            assert_eq!(got, &data[range.clone()], "{range:?}");
        }
        let past = read_exact(file, CHUNK as u64..(CHUNK + 78) as u64).await;
        assert!(matches!(past, Err(StorageError::Io(_))), "{past:?}");
    }

    #[tokio::test]
    async fn a_file_shorter_than_the_range_is_an_error_not_a_short_body() {
        let err = collect(stream(file_with(b"abc"), 0..10)).await.unwrap_err();
        assert!(matches!(err, StorageError::Io(_)), "{err:?}");
    }
}
