//! Blob uploads: sessions whose state lives in the store (so any instance continues them),
//! chunks appended in order, finishing against a digest, monolithic uploads, and the removal of
//! abandoned sessions.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::{Result, V2, V2Error};
use crate::oci::{Digest, DigestHasher, Name, UploadId};
use crate::storage::{StorageError, Upload, keys::v2 as keys};

/// Largest upload state record read back.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// An upload session as stored under `v2/uploads/<id>/state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadState {
    repo: Name,
    /// When the session started, in seconds since the epoch.
    created: u64,
    /// Bytes received so far: where the next chunk must start.
    offset: u64,
}

/// What `GET /v2/<name>/blobs/uploads/<id>` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadStatus {
    /// Bytes received so far.
    pub offset: u64,
    /// When the session started, in seconds since the epoch.
    pub created: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A request body failing is the client's connection breaking: the upload is cut off.
fn cut_off<E: std::fmt::Display>(e: E) -> V2Error {
    V2Error::Interrupted(e.to_string())
}

/// Streams `body` into `upload` (when there is one) and `hasher`, refusing more than `limit`
/// bytes in all; a failure of `body` is mapped by `fail` (a client cut off, or the store).
/// Returns the bytes streamed. The caller aborts the upload on error.
async fn pump<S, B, E>(
    body: S,
    mut upload: Option<&mut Box<dyn Upload>>,
    mut hasher: Option<&mut DigestHasher>,
    limit: u64,
    fail: impl Fn(E) -> V2Error,
) -> Result<u64>
where
    S: Stream<Item = std::result::Result<B, E>> + Send,
    B: Into<Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk: Bytes = chunk.map_err(&fail)?.into();
        size = size.saturating_add(chunk.len() as u64);
        if size > limit {
            return Err(V2Error::TooLarge { limit });
        }
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&chunk);
        }
        if let Some(u) = upload.as_deref_mut() {
            u.write(chunk).await?;
        }
    }
    Ok(size)
}

/// Aborts an upload after a failure; the failure is what the caller reports.
async fn abort(upload: Box<dyn Upload>) {
    if let Err(e) = upload.abort().await {
        tracing::warn!(error = %e, "aborting an upload failed");
    }
}

impl V2<'_> {
    async fn read_state(&self, repo: &Name, id: &UploadId) -> Result<UploadState> {
        let bytes = match self
            .store()
            .get_bytes(&keys::upload_state(id), MAX_STATE_BYTES)
            .await
        {
            Ok(b) => b,
            Err(StorageError::NotFound) => return Err(V2Error::UploadUnknown),
            Err(e) => return Err(e.into()),
        };
        let state: UploadState = serde_json::from_slice(&bytes).map_err(|e| {
            V2Error::Storage(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("corrupt upload state {id}: {e}"),
            )))
        })?;
        // A session is reachable only through the repository that started it.
        if state.repo != *repo {
            return Err(V2Error::UploadUnknown);
        }
        Ok(state)
    }

    async fn write_state(&self, id: &UploadId, state: &UploadState) -> Result<()> {
        let json = serde_json::to_vec(state)
            .map_err(|e| V2Error::UploadInvalid(format!("unwritable state: {e}")))?;
        self.store()
            .put(&keys::upload_state(id), Bytes::from(json))
            .await?;
        Ok(())
    }

    /// `POST /v2/<name>/blobs/uploads/`: opens a session with nothing received.
    pub async fn start_upload(&self, repo: &Name) -> Result<UploadId> {
        let id = UploadId::new_random();
        let state = UploadState {
            repo: repo.clone(),
            created: now_secs(),
            offset: 0,
        };
        self.write_state(&id, &state).await?;
        Ok(id)
    }

    /// `GET /v2/<name>/blobs/uploads/<id>`: how much the session has received.
    pub async fn upload_status(&self, repo: &Name, id: &UploadId) -> Result<UploadStatus> {
        let state = self.read_state(repo, id).await?;
        Ok(UploadStatus {
            offset: state.offset,
            created: state.created,
        })
    }

    /// `PATCH /v2/<name>/blobs/uploads/<id>`: stores `body` as the session's next chunk and
    /// returns the new offset. `start` (a `Content-Range` start) must be the session's offset,
    /// else [`V2Error::ChunkOutOfOrder`] and nothing is stored; `len`, when the request
    /// declares one, must be the body's length. An empty body stores nothing.
    pub async fn append_chunk<S, B, E>(
        &self,
        repo: &Name,
        id: &UploadId,
        start: Option<u64>,
        len: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<B, E>> + Send,
        B: Into<Bytes>,
        E: std::fmt::Display,
    {
        let mut state = self.read_state(repo, id).await?;
        if let Some(start) = start {
            if start != state.offset {
                return Err(V2Error::ChunkOutOfOrder {
                    start,
                    offset: state.offset,
                });
            }
        }
        let limit = self.max_blob_size().saturating_sub(state.offset);
        let mut upload = self
            .store()
            .upload(&keys::upload_part(id, state.offset))
            .await?;
        let written = match pump(body, Some(&mut upload), None, limit, cut_off).await {
            Ok(n) => n,
            Err(e) => {
                abort(upload).await;
                return Err(e);
            }
        };
        if len.is_some_and(|l| l != written) {
            abort(upload).await;
            return Err(V2Error::UploadInvalid(format!(
                "the chunk holds {written} bytes, not the {} its range declares",
                len.unwrap_or(0)
            )));
        }
        if written == 0 {
            abort(upload).await;
            return Ok(state.offset);
        }
        upload.finish().await?;
        state.offset += written;
        self.write_state(id, &state).await?;
        Ok(state.offset)
    }

    /// `DELETE /v2/<name>/blobs/uploads/<id>`: forgets the session and its chunks.
    pub async fn cancel_upload(&self, repo: &Name, id: &UploadId) -> Result<()> {
        self.read_state(repo, id).await?;
        self.remove_session(id).await
    }

    /// Deletes a session's state first (so it is unknown from then on), then its chunks.
    async fn remove_session(&self, id: &UploadId) -> Result<()> {
        let store = self.store();
        store.delete(&keys::upload_state(id)).await?;
        for key in store.list(&keys::upload_dir(id)).await? {
            store.delete(&key).await?;
        }
        Ok(())
    }

    /// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: concatenates the session's chunks into the
    /// blob, publishing it only when it hashes to `digest`, links it into `repo` and closes the
    /// session; returns the blob's size. A final chunk in the PUT body is appended first with
    /// [`V2::append_chunk`]. On [`V2Error::DigestInvalid`] nothing is published and the session
    /// stays as it was.
    pub async fn finish_upload(&self, repo: &Name, id: &UploadId, digest: &Digest) -> Result<u64> {
        let state = self.read_state(repo, id).await?;
        let store = self.store();
        let blob = keys::blob_data(digest);
        // A blob already stored is only hashed: it is never rewritten.
        let mut upload = if self.exists(&blob).await? {
            None
        } else {
            Some(store.upload(&blob).await?)
        };
        let mut hasher = DigestHasher::for_digest(digest);
        let result = self
            .concatenate(id, state.offset, upload.as_mut(), &mut hasher)
            .await;
        let result = result.and_then(|()| {
            if hasher.verify(digest) {
                Ok(())
            } else {
                Err(V2Error::DigestInvalid)
            }
        });
        if let Err(e) = result {
            if let Some(u) = upload {
                abort(u).await;
            }
            return Err(e);
        }
        if let Some(u) = upload {
            u.finish().await?;
        }
        self.link_blob(repo, digest).await?;
        self.remove_session(id).await?;
        Ok(state.offset)
    }

    /// Streams the chunks `0..total` in order, each from where the previous one ended.
    async fn concatenate(
        &self,
        id: &UploadId,
        total: u64,
        mut upload: Option<&mut Box<dyn Upload>>,
        hasher: &mut DigestHasher,
    ) -> Result<()> {
        let mut at = 0u64;
        while at < total {
            let part = match self.store().get(&keys::upload_part(id, at), None).await {
                Ok(d) => d,
                Err(StorageError::NotFound) => {
                    return Err(V2Error::UploadInvalid(format!("no chunk at offset {at}")));
                }
                Err(e) => return Err(e.into()),
            };
            if part.info.size == 0 {
                return Err(V2Error::UploadInvalid(format!("empty chunk at {at}")));
            }
            let size = part.info.size;
            let n = pump(
                part.stream,
                upload.as_deref_mut(),
                Some(&mut *hasher),
                size,
                V2Error::Storage,
            )
            .await?;
            if n != size {
                // The store returned fewer bytes than it holds: its failure, not the client's.
                return Err(V2Error::Storage(StorageError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("chunk at {at} read back as {n} of {size} bytes"),
                ))));
            }
            at += size;
        }
        if at != total {
            return Err(V2Error::UploadInvalid(format!(
                "chunks end at {at}, the session at {total}"
            )));
        }
        Ok(())
    }

    /// `POST /v2/<name>/blobs/uploads/?digest=` with the blob as body (or a monolithic PUT):
    /// streams it to the store, publishes it only when it hashes to `digest`, and links it into
    /// `repo`; returns its size.
    pub async fn put_blob<S, B, E>(&self, repo: &Name, digest: &Digest, body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<B, E>> + Send,
        B: Into<Bytes>,
        E: std::fmt::Display,
    {
        let blob = keys::blob_data(digest);
        let mut upload = if self.exists(&blob).await? {
            None
        } else {
            Some(self.store().upload(&blob).await?)
        };
        let mut hasher = DigestHasher::for_digest(digest);
        let result = pump(
            body,
            upload.as_mut(),
            Some(&mut hasher),
            self.max_blob_size(),
            cut_off,
        )
        .await;
        let result = result.and_then(|n| {
            if hasher.verify(digest) {
                Ok(n)
            } else {
                Err(V2Error::DigestInvalid)
            }
        });
        let size = match result {
            Ok(n) => n,
            Err(e) => {
                if let Some(u) = upload {
                    abort(u).await;
                }
                return Err(e);
            }
        };
        if let Some(u) = upload {
            u.finish().await?;
        }
        self.link_blob(repo, digest).await?;
        Ok(size)
    }

    /// Removes every upload session idle for longer than `idle` (no chunk or state written
    /// since), including chunks left without a state by an interrupted cancel; returns how many
    /// sessions were removed. For `regfs gc` and the server's periodic clean-up.
    pub async fn remove_abandoned_uploads(&self, idle: Duration) -> Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(idle)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.remove_uploads_idle_since(cutoff).await
    }

    /// Removes every upload session with nothing written since `cutoff`. A session whose last
    /// write is stamped after it (recent, or ahead by another instance's clock) stays.
    pub async fn remove_uploads_idle_since(&self, cutoff: SystemTime) -> Result<usize> {
        let store = self.store();
        let mut last_activity: HashMap<UploadId, SystemTime> = HashMap::new();
        for (key, info) in store.list_with_info(&keys::uploads()).await? {
            let Some(id) = keys::upload_id_from_key(&key) else {
                continue;
            };
            let entry = last_activity.entry(id).or_insert(info.last_modified);
            if info.last_modified > *entry {
                *entry = info.last_modified;
            }
        }
        let mut removed = 0;
        for (id, at) in last_activity {
            if at < cutoff {
                self.remove_session(&id).await?;
                tracing::info!(upload = %id, "removed an abandoned upload");
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::oci::Algorithm;

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn chunks_in_order_finish_into_a_linked_blob_and_the_session_is_gone() {
        let store = memory_store();
        let reg = registry(&store);
        let v2 = reg.v2();
        let repo = name("alice/app");
        let id = v2.start_upload(&repo).await.unwrap();
        assert_eq!(v2.upload_status(&repo, &id).await.unwrap().offset, 0);
        let off = v2
            .append_chunk(&repo, &id, Some(0), Some(5), body(&[b"hel", b"lo"]))
            .await
            .unwrap();
        assert_eq!(off, 5);
        let off = v2
            .append_chunk(&repo, &id, None, None, body(&[b" world"]))
            .await
            .unwrap();
        assert_eq!(off, 11);
        let digest = Digest::sha256(b"hello world");
        assert_eq!(v2.finish_upload(&repo, &id, &digest).await.unwrap(), 11);
        let d = v2.blob(&repo, &digest, None).await.unwrap();
        assert_eq!(collect(d).await, b"hello world");
        assert!(matches!(
            v2.upload_status(&repo, &id).await,
            Err(V2Error::UploadUnknown)
        ));
        assert!(store.list(&keys::uploads()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_out_of_order_chunk_is_refused_and_stores_nothing() {
        let store = memory_store();
        let reg = registry(&store);
        let v2 = reg.v2();
        let repo = name("a");
        let id = v2.start_upload(&repo).await.unwrap();
        v2.append_chunk(&repo, &id, Some(0), None, body(&[b"abc"]))
            .await
            .unwrap();
        for start in [0, 2, 4] {
            let e = v2
                .append_chunk(&repo, &id, Some(start), None, body(&[b"x"]))
                .await
                .unwrap_err();
            assert!(
                matches!(e, V2Error::ChunkOutOfOrder { offset: 3, .. }),
                "{e}"
            );
            assert_eq!(e.code(), crate::oci::ErrorCode::RangeInvalid);
        }
        // A chunk whose length is not the declared one is refused too.
        let e = v2
            .append_chunk(&repo, &id, Some(3), Some(4), body(&[b"xy"]))
            .await
            .unwrap_err();
        assert!(matches!(e, V2Error::UploadInvalid(_)), "{e}");
        assert_eq!(v2.upload_status(&repo, &id).await.unwrap().offset, 3);
        assert_eq!(store.list(&keys::upload_parts(&id)).await.unwrap().len(), 1);
        // Another repository does not see the session.
        assert!(matches!(
            v2.upload_status(&name("b"), &id).await,
            Err(V2Error::UploadUnknown)
        ));
    }

    #[tokio::test]
    async fn a_wrong_digest_publishes_nothing_and_keeps_the_session() {
        let store = memory_store();
        let reg = registry(&store);
        let v2 = reg.v2();
        let repo = name("a");
        let id = v2.start_upload(&repo).await.unwrap();
        v2.append_chunk(&repo, &id, None, None, body(&[b"data"]))
            .await
            .unwrap();
        let wrong = Digest::sha256(b"other");
        let e = v2.finish_upload(&repo, &id, &wrong).await.unwrap_err();
        assert!(matches!(e, V2Error::DigestInvalid), "{e}");
        store.settled().await;
        assert!(store.list(&keys::blobs()).await.unwrap().is_empty());
        assert!(!v2.blob_linked(&repo, &wrong).await.unwrap());
        // The right digest still finishes it, with another algorithm too.
        let right = Digest::of(Algorithm::Sha512, b"data");
        assert_eq!(v2.finish_upload(&repo, &id, &right).await.unwrap(), 4);
        assert_eq!(v2.blob_size(&repo, &right).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn another_registry_on_the_same_store_continues_and_finishes_an_upload() {
        let store = memory_store();
        let (first, second) = (registry(&store), registry(&store));
        let repo = name("team/app");
        let id = first.v2().start_upload(&repo).await.unwrap();
        first
            .v2()
            .append_chunk(&repo, &id, Some(0), None, body(&[b"one,"]))
            .await
            .unwrap();
        let status = second.v2().upload_status(&repo, &id).await.unwrap();
        assert_eq!(status.offset, 4);
        second
            .v2()
            .append_chunk(&repo, &id, Some(4), None, body(&[b"two"]))
            .await
            .unwrap();
        let e = first
            .v2()
            .append_chunk(&repo, &id, Some(4), None, body(&[b"two"]))
            .await
            .unwrap_err();
        assert!(matches!(e, V2Error::ChunkOutOfOrder { offset: 7, .. }));
        let digest = Digest::sha256(b"one,two");
        first.v2().finish_upload(&repo, &id, &digest).await.unwrap();
        let d = second.v2().blob(&repo, &digest, None).await.unwrap();
        assert_eq!(collect(d).await, b"one,two");
    }

    #[tokio::test]
    async fn cancel_removes_the_session_and_its_chunks() {
        let store = memory_store();
        let reg = registry(&store);
        let v2 = reg.v2();
        let repo = name("a");
        let id = v2.start_upload(&repo).await.unwrap();
        v2.append_chunk(&repo, &id, None, None, body(&[b"abc"]))
            .await
            .unwrap();
        assert!(matches!(
            v2.cancel_upload(&name("b"), &id).await,
            Err(V2Error::UploadUnknown)
        ));
        v2.cancel_upload(&repo, &id).await.unwrap();
        assert!(store.list(&keys::uploads()).await.unwrap().is_empty());
        assert!(matches!(
            v2.append_chunk(&repo, &id, None, None, body(&[b"d"])).await,
            Err(V2Error::UploadUnknown)
        ));
    }

    #[tokio::test]
    async fn a_monolithic_upload_is_verified_before_it_is_published() {
        let store = memory_store();
        let reg = registry(&store);
        let v2 = reg.v2();
        let repo = name("a");
        let digest = Digest::sha256(b"layer bytes");
        let e = v2
            .put_blob(&repo, &digest, body(&[b"layer", b" bytez"]))
            .await
            .unwrap_err();
        assert!(matches!(e, V2Error::DigestInvalid));
        store.settled().await;
        assert!(store.list(&keys::blobs()).await.unwrap().is_empty());
        let n = v2
            .put_blob(&repo, &digest, body(&[b"layer", b" bytes"]))
            .await
            .unwrap();
        assert_eq!(n, 11);
        // A body cut off mid-way publishes nothing and links nothing.
        let other = Digest::sha256(b"cut");
        let cut = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"cu")),
            Err(std::io::Error::other("reset")),
        ]);
        let e = v2.put_blob(&name("b"), &other, cut).await.unwrap_err();
        assert!(matches!(e, V2Error::Interrupted(_)));
        assert!(!v2.blob_linked(&name("b"), &other).await.unwrap());
        // The same blob pushed into another repository is verified, not rewritten.
        let e = v2
            .put_blob(&name("b"), &digest, body(&[b"not it"]))
            .await
            .unwrap_err();
        assert!(matches!(e, V2Error::DigestInvalid));
        assert!(!v2.blob_linked(&name("b"), &digest).await.unwrap());
        v2.put_blob(&name("b"), &digest, body(&[b"layer bytes"]))
            .await
            .unwrap();
        let d = v2.blob(&name("b"), &digest, None).await.unwrap();
        assert_eq!(collect(d).await, b"layer bytes");
    }

    #[tokio::test]
    async fn a_blob_over_the_limit_is_refused() {
        let store = memory_store();
        let config = crate::registry::RegistryConfig {
            max_layer_size: 4,
            ..Default::default()
        };
        let reg = crate::registry::Registry::new(store.clone(), config);
        let v2 = reg.v2();
        let repo = name("a");
        let id = v2.start_upload(&repo).await.unwrap();
        v2.append_chunk(&repo, &id, None, None, body(&[b"abc"]))
            .await
            .unwrap();
        let e = v2
            .append_chunk(&repo, &id, None, None, body(&[b"de"]))
            .await
            .unwrap_err();
        assert!(matches!(e, V2Error::TooLarge { limit: 1 }), "{e}");
        let e = v2
            .put_blob(&repo, &Digest::sha256(b"abcde"), body(&[b"abcde"]))
            .await
            .unwrap_err();
        assert!(matches!(e, V2Error::TooLarge { .. }));
    }

    #[tokio::test]
    async fn abandoned_sessions_are_removed_and_recent_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        for store in [
            memory_store(),
            crate::storage::open(&crate::storage::StorageConfig::Local(dir.path().into())).unwrap(),
        ] {
            let reg = registry(&store);
            let v2 = reg.v2();
            let repo = name("a");
            let id = v2.start_upload(&repo).await.unwrap();
            v2.append_chunk(&repo, &id, None, None, body(&[b"abc"]))
                .await
                .unwrap();
            let empty = v2.start_upload(&repo).await.unwrap();
            // Chunks whose state is gone (a cancel cut off half-way).
            let orphan = UploadId::new_random();
            store
                .put(&keys::upload_part(&orphan, 0), Bytes::from_static(b"x"))
                .await
                .unwrap();
            let hour = Duration::from_secs(3600);
            assert_eq!(v2.remove_abandoned_uploads(hour).await.unwrap(), 0);
            assert_eq!(v2.upload_status(&repo, &id).await.unwrap().offset, 3);
            let past = SystemTime::now() - hour;
            assert_eq!(v2.remove_uploads_idle_since(past).await.unwrap(), 0);
            let future = SystemTime::now() + hour;
            assert_eq!(v2.remove_uploads_idle_since(future).await.unwrap(), 3);
            assert!(store.list(&keys::uploads()).await.unwrap().is_empty());
            for gone in [&id, &empty] {
                assert!(matches!(
                    v2.upload_status(&repo, gone).await,
                    Err(V2Error::UploadUnknown)
                ));
            }
        }
    }

    /// Finishing reads chunks as streams: a blob of several store-sized parts comes out whole.
    #[tokio::test]
    async fn a_local_directory_store_takes_a_chunked_upload() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::storage::open(&crate::storage::StorageConfig::Local(dir.path().into())).unwrap();
        let reg = registry(&store);
        let v2 = reg.v2();
        let repo = name("a/b");
        let chunk = vec![7u8; 3 * 1024 * 1024 + 1];
        let id = v2.start_upload(&repo).await.unwrap();
        let mut all = Vec::new();
        for i in 0..3u64 {
            let off = v2
                .append_chunk(
                    &repo,
                    &id,
                    Some(i * chunk.len() as u64),
                    None,
                    body(&[&chunk]),
                )
                .await
                .unwrap();
            all.extend_from_slice(&chunk);
            assert_eq!(off, all.len() as u64);
        }
        let digest = Digest::sha256(&all);
        v2.finish_upload(&repo, &id, &digest).await.unwrap();
        let d = v2.blob(&repo, &digest, Some(10..20)).await.unwrap();
        assert_eq!(d.info.size, all.len() as u64);
        assert_eq!(collect(d).await, &all[10..20]);
        assert!(store.list(&keys::uploads()).await.unwrap().is_empty());
    }
}
