//! Blobs: stored once per store under their digest and served through a repository only when
//! linked into it (by an upload, a mount or a manifest's push), so a repository never serves
//! content it was not given.

use std::ops::Range;

use bytes::Bytes;

use super::{Result, V2, V2Error};
use crate::oci::{Digest, Name};
use crate::storage::{Download, StorageError, keys::v2 as keys};

impl V2<'_> {
    /// Links a stored blob into `repo`. The link holds the digest, for a reader of the store.
    pub(super) async fn link_blob(&self, repo: &Name, digest: &Digest) -> Result<()> {
        self.store()
            .put(
                &keys::repo_blob_link(repo, digest),
                Bytes::copy_from_slice(digest.as_str().as_bytes()),
            )
            .await?;
        Ok(())
    }

    /// Whether `digest` is linked into `repo`.
    pub async fn blob_linked(&self, repo: &Name, digest: &Digest) -> Result<bool> {
        self.exists(&keys::repo_blob_link(repo, digest)).await
    }

    /// `HEAD /v2/<name>/blobs/<digest>`: the size of a blob linked into `repo`.
    pub async fn blob_size(&self, repo: &Name, digest: &Digest) -> Result<u64> {
        if !self.blob_linked(repo, digest).await? {
            return Err(V2Error::BlobUnknown);
        }
        match self.store().head(&keys::blob_data(digest)).await {
            Ok(info) => Ok(info.size),
            Err(StorageError::NotFound) => Err(V2Error::BlobUnknown),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /v2/<name>/blobs/<digest>`: streams a blob linked into `repo`, or the byte `range`
    /// of it (cut at the end; one starting at or past the end is
    /// [`V2Error::RangeNotSatisfiable`]). `Download::info.size` is the blob's size.
    pub async fn blob(
        &self,
        repo: &Name,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Download> {
        if !self.blob_linked(repo, digest).await? {
            return Err(V2Error::BlobUnknown);
        }
        match self.store().get(&keys::blob_data(digest), range).await {
            Ok(d) => Ok(d),
            Err(StorageError::NotFound) => Err(V2Error::BlobUnknown),
            Err(StorageError::InvalidRange { size }) => Err(V2Error::RangeNotSatisfiable { size }),
            Err(e) => Err(e.into()),
        }
    }

    /// The open file of a blob linked into `repo`, where the store is a local directory (to
    /// send it without copying); `None` elsewhere.
    pub async fn blob_file(
        &self,
        repo: &Name,
        digest: &Digest,
    ) -> Result<Option<(std::fs::File, u64)>> {
        if !self.blob_linked(repo, digest).await? {
            return Err(V2Error::BlobUnknown);
        }
        Ok(self.store().open_file(&keys::blob_data(digest)).await?)
    }

    /// `POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<from>`: links the blob into `repo`
    /// when it is linked into `from` and the caller may read `from`. Returns whether it did;
    /// when not, the server opens an upload session instead (202), as the spec says.
    pub async fn mount_blob(
        &self,
        repo: &Name,
        digest: &Digest,
        from: &Name,
        may_read_from: bool,
    ) -> Result<bool> {
        if !may_read_from || !self.blob_linked(from, digest).await? {
            return Ok(false);
        }
        if !self.exists(&keys::blob_data(digest)).await? {
            return Ok(false);
        }
        self.link_blob(repo, digest).await?;
        Ok(true)
    }

    /// `DELETE /v2/<name>/blobs/<digest>`: unlinks the blob from `repo`. Its bytes stay until
    /// `regfs gc` finds them linked nowhere.
    pub async fn delete_blob(&self, repo: &Name, digest: &Digest) -> Result<()> {
        if !self.blob_linked(repo, digest).await? {
            return Err(V2Error::BlobUnknown);
        }
        self.store()
            .delete(&keys::repo_blob_link(repo, digest))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_blob_is_served_only_where_it_is_linked_and_mounts_need_read_access() {
        let store = memory_store();
        let reg = registry(&store);
        let v2 = reg.v2();
        let (a, b) = (name("a"), name("b"));
        let digest = Digest::sha256(b"0123456789");
        v2.put_blob(&a, &digest, body(&[b"0123456789"]))
            .await
            .unwrap();
        assert_eq!(v2.blob_size(&a, &digest).await.unwrap(), 10);
        assert!(matches!(
            v2.blob_size(&b, &digest).await,
            Err(V2Error::BlobUnknown)
        ));
        assert!(matches!(
            v2.blob(&b, &digest, None).await,
            Err(V2Error::BlobUnknown)
        ));
        let d = v2.blob(&a, &digest, Some(8..100)).await.unwrap();
        assert_eq!(d.range, 8..10);
        assert_eq!(collect(d).await, b"89");
        let e = v2.blob(&a, &digest, Some(10..11)).await.unwrap_err();
        assert!(
            matches!(e, V2Error::RangeNotSatisfiable { size: 10 }),
            "{e}"
        );

        assert!(!v2.mount_blob(&b, &digest, &a, false).await.unwrap());
        assert!(!v2.blob_linked(&b, &digest).await.unwrap());
        let unknown = Digest::sha256(b"nope");
        assert!(!v2.mount_blob(&b, &unknown, &a, true).await.unwrap());
        assert!(v2.mount_blob(&b, &digest, &a, true).await.unwrap());
        assert_eq!(v2.blob_size(&b, &digest).await.unwrap(), 10);

        v2.delete_blob(&a, &digest).await.unwrap();
        assert!(matches!(
            v2.blob_size(&a, &digest).await,
            Err(V2Error::BlobUnknown)
        ));
        assert!(matches!(
            v2.delete_blob(&a, &digest).await,
            Err(V2Error::BlobUnknown)
        ));
        // The other repository's link still serves it.
        assert_eq!(v2.blob_size(&b, &digest).await.unwrap(), 10);
    }

    #[tokio::test]
    async fn a_stored_blob_not_linked_into_the_repository_is_unknown_there() {
        let store = memory_store();
        let reg = registry(&store);
        let digest = Digest::sha256(b"x");
        store
            .put(&keys::blob_data(&digest), Bytes::from_static(b"x"))
            .await
            .unwrap();
        let e = reg.v2().blob_size(&name("a"), &digest).await.unwrap_err();
        assert_eq!(e.code(), crate::oci::ErrorCode::BlobUnknown);
    }
}
