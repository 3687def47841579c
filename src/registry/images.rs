//! Images: the json + layer + checksum push protocol, and reads of complete images.
//!
//! An image moves through three stored states, each published by one atomic write, so a crash
//! at any point leaves an image that is either absent, in progress (never served), or complete:
//! 1. `ancestry` then `json` written (PUT json), any earlier `_checksum` dropped first;
//! 2. `layer` published when its upload finishes, then `_checksum` (the payload checksum
//!    computed while the bytes streamed through);
//! 3. `_complete`, written last, once the client's checksum matches.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Registry, RegistryError, Result, exists, read_json};
use crate::names::ImageId;
use crate::storage::{Download, StorageError, keys};

/// What the registry knows of a complete image without reading its blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    /// The layer's size in bytes.
    pub size: u64,
    /// `sha256:<hex>` of `json + "\n" + layer`.
    pub checksum: String,
    /// When the image was made, in seconds since the epoch: its json's `created`, else when it
    /// completed. Absent from records written before it was kept; filled in when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<i64>,
}

impl ImageMeta {
    /// [`ImageMeta::last_modified`] as a time (the epoch if unknown).
    pub fn last_modified_time(&self) -> std::time::SystemTime {
        let secs = self.last_modified.unwrap_or(0).max(0).unsigned_abs();
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }
}

/// The `created` time of an image json, in seconds since the epoch, if it has a readable one.
fn created_of(json: &[u8]) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let created = value.get("created")?.as_str()?;
    let at = humantime::parse_rfc3339_weak(created.trim_end_matches('Z')).ok()?;
    let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// The computed checksum of an uploaded layer, kept until the client confirms it.
#[derive(Debug, Serialize, Deserialize)]
struct PendingChecksum {
    payload: String,
    size: u64,
}

/// A layer being read: its metadata and the requested bytes.
#[derive(Debug)]
pub struct LayerStream {
    pub meta: Arc<ImageMeta>,
    pub download: Download,
}

impl Registry {
    /// The metadata of a complete image; in-progress and unknown images are errors.
    pub async fn image(&self, id: &ImageId) -> Result<Arc<ImageMeta>> {
        if let Some(meta) = self.cached_complete(id) {
            return Ok(meta);
        }
        let store = self.store().as_ref();
        match read_json::<ImageMeta>(store, &keys::image_complete(id), || {
            RegistryError::ImageNotFound
        })
        .await
        {
            Ok(mut meta) => {
                if meta.last_modified.is_none() {
                    meta.last_modified = self.image_time(id).await?;
                }
                let meta = Arc::new(meta);
                if let Ok(mut cache) = self.inner.complete.lock() {
                    cache.put(id.clone(), meta.clone());
                }
                Ok(meta)
            }
            Err(RegistryError::ImageNotFound) => {
                if exists(store, &keys::image_json(id)).await? {
                    Err(RegistryError::ImageInProgress)
                } else {
                    Err(RegistryError::ImageNotFound)
                }
            }
            Err(e) => Err(e),
        }
    }

    fn cached_complete(&self, id: &ImageId) -> Option<Arc<ImageMeta>> {
        self.inner.complete.lock().ok()?.get(id).cloned()
    }

    /// The stored json of a complete image, verbatim.
    pub async fn image_json(&self, id: &ImageId) -> Result<(Arc<ImageMeta>, Bytes)> {
        let meta = self.image(id).await?;
        let cached = self.inner.json.lock().ok().and_then(|mut c| c.get(id));
        if let Some(json) = cached {
            return Ok((meta, json));
        }
        let json = self.read_blob(&keys::image_json(id)).await?;
        if let Ok(mut cache) = self.inner.json.lock() {
            cache.put(id.clone(), json.clone());
        }
        Ok((meta, json))
    }

    /// For a record that does not say: the json's `created`, else the time its completion was
    /// stored.
    async fn image_time(&self, id: &ImageId) -> Result<Option<i64>> {
        let json = self.read_blob(&keys::image_json(id)).await?;
        if let Some(created) = created_of(&json) {
            return Ok(Some(created));
        }
        let info = self.store().head(&keys::image_complete(id)).await?;
        Ok(info
            .last_modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok()))
    }

    /// The ancestry of a complete image, as stored (a JSON list, the image first).
    pub async fn image_ancestry(&self, id: &ImageId) -> Result<Bytes> {
        self.image(id).await?;
        self.read_blob(&keys::image_ancestry(id)).await
    }

    /// The parsed ancestry of a complete image.
    pub async fn ancestry_ids(&self, id: &ImageId) -> Result<Vec<ImageId>> {
        let raw = self.image_ancestry(id).await?;
        parse_ancestry(&raw)
    }

    /// The layer of a complete image, or a byte range of it.
    pub async fn image_layer(
        &self,
        id: &ImageId,
        range: Option<Range<u64>>,
    ) -> Result<LayerStream> {
        let meta = self.image(id).await?;
        let download = match self.store().get(&keys::image_layer(id), range).await {
            Ok(d) => d,
            Err(StorageError::NotFound) => return Err(RegistryError::ImageNotFound),
            Err(e) => return Err(e.into()),
        };
        Ok(LayerStream { meta, download })
    }

    /// The open file of a complete image's layer, where storage is a local directory; `None`
    /// elsewhere, or if the file is not the size the image records.
    pub async fn layer_file(&self, id: &ImageId) -> Result<Option<std::fs::File>> {
        let meta = self.image(id).await?;
        match self.store().open_file(&keys::image_layer(id)).await? {
            Some((file, size)) if size == meta.size => Ok(Some(file)),
            Some((_, size)) => {
                tracing::warn!(%id, size, recorded = meta.size, "stored layer has the wrong size");
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn read_blob(&self, key: &crate::storage::Key) -> Result<Bytes> {
        match self.store().get_bytes(key, super::MAX_JSON_BYTES).await {
            Ok(b) => Ok(b),
            Err(StorageError::NotFound) => Err(RegistryError::ImageNotFound),
            Err(e) => Err(e.into()),
        }
    }

    async fn is_complete(&self, id: &ImageId) -> Result<bool> {
        if self.cached_complete(id).is_some() {
            return Ok(true);
        }
        exists(self.store().as_ref(), &keys::image_complete(id)).await
    }

    /// `PUT /v1/images/<id>/json`: validates and stores the json verbatim, with its ancestry.
    pub async fn put_image_json(&self, id: &ImageId, body: Bytes) -> Result<()> {
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| RegistryError::InvalidJson)?;
        let obj = value.as_object().ok_or(RegistryError::InvalidJson)?;
        let json_id = match obj.get("id") {
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err(RegistryError::InvalidImageJson("Invalid image id")),
            None => return Err(RegistryError::InvalidImageJson("Missing key `id' in JSON")),
        };
        if json_id != id.as_str() {
            return Err(RegistryError::InvalidImageJson(
                "JSON data contains invalid id",
            ));
        }
        let parent = match obj.get("parent") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.is_empty() => None,
            Some(serde_json::Value::String(s)) => Some(
                s.parse::<ImageId>()
                    .map_err(|_| RegistryError::ParentMissing)?,
            ),
            Some(_) => return Err(RegistryError::InvalidImageJson("Invalid parent id")),
        };
        if parent.as_ref() == Some(id) {
            return Err(RegistryError::InvalidImageJson(
                "An image cannot be its own parent",
            ));
        }
        let mut ancestry = vec![id.clone()];
        if let Some(parent) = &parent {
            let store = self.store().as_ref();
            let raw = match store
                .get_bytes(&keys::image_ancestry(parent), super::MAX_JSON_BYTES)
                .await
            {
                Ok(raw) => raw,
                Err(StorageError::NotFound) => return Err(RegistryError::ParentMissing),
                Err(e) => return Err(e.into()),
            };
            ancestry.extend(parse_ancestry(&raw)?);
        }
        if self.is_complete(id).await? {
            return Err(RegistryError::ImageExists);
        }
        let store = self.store();
        // Dropping the old checksum first means a layer uploaded against other json bytes can
        // never complete this image.
        store.delete(&keys::image_checksum(id)).await?;
        let ancestry = serde_json::to_vec(&ancestry.iter().map(|i| i.as_str()).collect::<Vec<_>>())
            .map_err(|_| RegistryError::InvalidJson)?;
        // The json goes last: it is what lets a layer be pushed and the image complete, so an
        // image can never complete without its ancestry when the second write fails.
        store
            .put(&keys::image_ancestry(id), Bytes::from(ancestry))
            .await?;
        store.put(&keys::image_json(id), body).await?;
        Ok(())
    }

    /// `PUT /v1/images/<id>/layer`: streams the layer into storage, computing the payload
    /// checksum on the way. Nothing is published if the stream fails or exceeds the limit.
    pub async fn put_image_layer<S, B, E>(&self, id: &ImageId, body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<B, E>> + Send,
        B: Into<Bytes>,
        E: std::fmt::Display,
    {
        let store = self.store();
        let json = match store
            .get_bytes(&keys::image_json(id), super::MAX_JSON_BYTES)
            .await
        {
            Ok(j) => j,
            Err(StorageError::NotFound) => return Err(RegistryError::ImageNotFound),
            Err(e) => return Err(e.into()),
        };
        if self.is_complete(id).await? {
            return Err(RegistryError::ImageExists);
        }
        let limit = self.config().max_layer_size;
        let mut hasher = Sha256::new();
        hasher.update(&json);
        hasher.update(b"\n");
        let mut upload = store.upload(&keys::image_layer(id)).await?;
        let mut size: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = match chunk {
                Ok(c) => c.into(),
                Err(e) => {
                    let _ = upload.abort().await;
                    return Err(RegistryError::UploadInterrupted(e.to_string()));
                }
            };
            size += chunk.len() as u64;
            if size > limit {
                let _ = upload.abort().await;
                return Err(RegistryError::LayerTooLarge { limit });
            }
            hasher.update(&chunk);
            if let Err(e) = upload.write(chunk).await {
                let _ = upload.abort().await;
                return Err(e.into());
            }
        }
        upload.finish().await?;
        let pending = PendingChecksum {
            payload: format!("sha256:{}", hex::encode(hasher.finalize())),
            size,
        };
        let pending = serde_json::to_vec(&pending).map_err(|_| RegistryError::InvalidJson)?;
        store
            .put(&keys::image_checksum(id), Bytes::from(pending))
            .await?;
        Ok(size)
    }

    /// `PUT /v1/images/<id>/checksum`: completes the image when the client's payload checksum
    /// matches the one computed from the stored json and layer.
    pub async fn put_image_checksum(&self, id: &ImageId, payload: Option<&str>) -> Result<()> {
        let payload = payload.ok_or(RegistryError::ChecksumMissing)?.trim();
        if payload.is_empty() {
            return Err(RegistryError::ChecksumEmpty);
        }
        let store = self.store().as_ref();
        let json = match store
            .get_bytes(&keys::image_json(id), super::MAX_JSON_BYTES)
            .await
        {
            Ok(json) => json,
            Err(StorageError::NotFound) => return Err(RegistryError::ImageNotFound),
            Err(e) => return Err(e.into()),
        };
        if self.is_complete(id).await? {
            return Err(RegistryError::CannotSetChecksum);
        }
        let pending: PendingChecksum = read_json(store, &keys::image_checksum(id), || {
            RegistryError::LayerMissing
        })
        .await?;
        // Docker < 1.0 sent several comma-separated sums; any one matching is enough.
        if !payload.split(',').any(|p| p.trim() == pending.payload) {
            return Err(RegistryError::ChecksumMismatch);
        }
        let meta = ImageMeta {
            size: pending.size,
            checksum: pending.payload,
            last_modified: Some(created_of(&json).unwrap_or_else(super::now_unix)),
        };
        let record = serde_json::to_vec(&meta).map_err(|_| RegistryError::InvalidJson)?;
        store
            .put(&keys::image_complete(id), Bytes::from(record))
            .await?;
        if let Ok(mut cache) = self.inner.complete.lock() {
            cache.put(id.clone(), Arc::new(meta));
        }
        Ok(())
    }
}

fn parse_ancestry(raw: &[u8]) -> Result<Vec<ImageId>> {
    let ids: Vec<String> =
        serde_json::from_slice(raw).map_err(|e| super::corrupt(format!("ancestry: {e}")))?;
    ids.iter()
        .map(|s| s.parse::<ImageId>().map_err(RegistryError::from))
        .collect()
}

#[cfg(test)]
mod created_tests {
    use super::*;

    #[test]
    fn created_is_read_from_the_json_or_not_at_all() {
        assert_eq!(
            created_of(br#"{"id":"x","created":"2014-10-01T00:00:00Z"}"#),
            Some(1_412_121_600)
        );
        assert_eq!(
            created_of(br#"{"created":"2014-10-01T00:00:00.123456789Z"}"#),
            Some(1_412_121_600)
        );
        for bad in [
            &br#"{"id":"x"}"#[..],
            br#"{"created":5}"#,
            b"not json",
            br#"{"created":"yesterday"}"#,
        ] {
            assert_eq!(created_of(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
