//! Manifests and tags, the catalog and referrers.
//!
//! A manifest's bytes are stored verbatim as a blob under their digest; the repository holds it
//! through a revision record (its media type, size and subject), a tag is one object naming a
//! digest, a referrer is one object per (subject, referrer) holding the referrer's descriptor,
//! so listing referrers reads no manifest. Deleting a manifest removes its revision first: from
//! then on nothing serves it, and a crash before its tags and referrer entry go leaves entries
//! that resolve to nothing (skipped by the referrers listing, unknown on GET).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Result, V2, V2Error};
use crate::oci::manifest::MAX_MANIFEST_SIZE;
use crate::oci::pagination::{PageQuery, paginate};
use crate::oci::{Descriptor, Digest, Name, Reference, ReferrersIndex, Tag, parse_manifest};
use crate::storage::{Key, StorageError, keys::v2 as keys};

/// Largest tag, revision or referrer record read back (a referrer carries its annotations).
const MAX_RECORD_BYTES: u64 = MAX_MANIFEST_SIZE as u64;

/// What a repository records of a manifest it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Revision {
    media_type: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Digest>,
}

/// The outcome of a manifest PUT: its digest (`Docker-Content-Digest`, `Location`) and its
/// subject (`OCI-Subject`), if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// What a HEAD of a manifest answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A manifest as a GET answers it: its bytes, exactly as pushed.
#[derive(Debug, Clone)]
pub struct ManifestContent {
    pub info: ManifestInfo,
    pub bytes: Bytes,
}

/// One page of a sorted listing (tags, catalog), and the `last` of the next page if entries
/// remain (for the `Link` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<String>,
    pub next_last: Option<String>,
}

/// The page of tags of a repository.
pub type TagPage = ListPage;

fn corrupt(key: &Key, e: impl std::fmt::Display) -> V2Error {
    V2Error::Storage(StorageError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("corrupt record {key}: {e}"),
    )))
}

fn page(mut all: Vec<String>, query: &PageQuery) -> ListPage {
    all.sort();
    all.dedup();
    let p = paginate(&all, query);
    ListPage {
        items: p.items.to_vec(),
        next_last: p.next_last.map(str::to_string),
    }
}

impl V2<'_> {
    /// `PUT /v2/<name>/manifests/<reference>`: validates and stores a manifest verbatim,
    /// tagging it when `reference` is a tag. Refused with [`V2Error::ManifestBlobUnknown`] when
    /// a blob it needs is not linked into `repo` or a child manifest is not in it (its subject
    /// may be absent); with [`V2Error::DigestInvalid`] when pushed by a digest the bytes do not
    /// hash to.
    pub async fn put_manifest(
        &self,
        repo: &Name,
        reference: &Reference,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<PutManifest> {
        let manifest = parse_manifest(&body, content_type)?;
        let digest = match reference {
            Reference::Digest(d) => {
                if Digest::of(d.algorithm(), &body) != *d {
                    return Err(V2Error::DigestInvalid);
                }
                d.clone()
            }
            Reference::Tag(_) => Digest::sha256(&body),
        };
        for blob in manifest.required_blobs() {
            if !self.blob_linked(repo, &blob.digest).await? {
                return Err(V2Error::ManifestBlobUnknown(blob.digest.clone()));
            }
        }
        for child in manifest.required_manifests() {
            if !self
                .exists(&keys::repo_manifest_revision(repo, &child.digest))
                .await?
            {
                return Err(V2Error::ManifestBlobUnknown(child.digest.clone()));
            }
        }
        let store = self.store();
        let size = body.len() as u64;
        let subject = manifest.subject.as_ref().map(|s| s.digest.clone());
        store.put(&keys::blob_data(&digest), body).await?;
        let revision = Revision {
            media_type: manifest.media_type().to_string(),
            size,
            subject: subject.clone(),
        };
        let revision = serde_json::to_vec(&revision).map_err(|e| corrupt(&keys::blobs(), e))?;
        store
            .put(
                &keys::repo_manifest_revision(repo, &digest),
                Bytes::from(revision),
            )
            .await?;
        if let Some(subject) = &subject {
            let entry = manifest.referrer_descriptor(digest.clone(), size);
            let entry = serde_json::to_vec(&entry).map_err(|e| corrupt(&keys::blobs(), e))?;
            store
                .put(
                    &keys::repo_referrer(repo, subject, &digest),
                    Bytes::from(entry),
                )
                .await?;
        }
        store
            .put(&keys::catalog_entry(repo), Bytes::from_static(b"{}"))
            .await?;
        if let Reference::Tag(tag) = reference {
            store
                .put(
                    &keys::repo_tag(repo, tag),
                    Bytes::copy_from_slice(digest.as_str().as_bytes()),
                )
                .await?;
        }
        Ok(PutManifest { digest, subject })
    }

    /// The digest a reference names in `repo`.
    async fn resolve(&self, repo: &Name, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(tag) => {
                let key = keys::repo_tag(repo, tag);
                match self.store().get_bytes(&key, MAX_RECORD_BYTES).await {
                    Ok(b) => std::str::from_utf8(&b)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .ok_or_else(|| corrupt(&key, "not a digest")),
                    Err(StorageError::NotFound) => Err(V2Error::ManifestUnknown),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    async fn revision(&self, repo: &Name, digest: &Digest) -> Result<Revision> {
        let key = keys::repo_manifest_revision(repo, digest);
        match self.store().get_bytes(&key, MAX_RECORD_BYTES).await {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| corrupt(&key, e)),
            Err(StorageError::NotFound) => Err(V2Error::ManifestUnknown),
            Err(e) => Err(e.into()),
        }
    }

    /// `HEAD /v2/<name>/manifests/<reference>`.
    pub async fn manifest_info(&self, repo: &Name, reference: &Reference) -> Result<ManifestInfo> {
        let digest = self.resolve(repo, reference).await?;
        let revision = self.revision(repo, &digest).await?;
        Ok(ManifestInfo {
            digest,
            media_type: revision.media_type,
            size: revision.size,
        })
    }

    /// `GET /v2/<name>/manifests/<reference>`: the bytes as pushed, with digest and media type.
    pub async fn manifest(&self, repo: &Name, reference: &Reference) -> Result<ManifestContent> {
        let info = self.manifest_info(repo, reference).await?;
        let bytes = match self
            .store()
            .get_bytes(&keys::blob_data(&info.digest), MAX_MANIFEST_SIZE as u64)
            .await
        {
            Ok(b) => b,
            Err(StorageError::NotFound) => return Err(V2Error::ManifestUnknown),
            Err(e) => return Err(e.into()),
        };
        Ok(ManifestContent { info, bytes })
    }

    /// `DELETE /v2/<name>/manifests/<digest>`: removes the manifest from `repo`, with the tags
    /// naming it and its entry among its subject's referrers. Its bytes stay for `regfs gc`.
    pub async fn delete_manifest(&self, repo: &Name, digest: &Digest) -> Result<()> {
        let revision = self.revision(repo, digest).await?;
        let store = self.store();
        store
            .delete(&keys::repo_manifest_revision(repo, digest))
            .await?;
        let tags = keys::repo_tags(repo);
        for key in store.list(&tags).await? {
            let Some(tag) = keys::tag_from_key(&key, &tags) else {
                continue;
            };
            match self.resolve(repo, &Reference::Tag(tag)).await {
                Ok(d) if d == *digest => store.delete(&key).await?,
                Ok(_) | Err(V2Error::ManifestUnknown) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(subject) = &revision.subject {
            store
                .delete(&keys::repo_referrer(repo, subject, digest))
                .await?;
        }
        Ok(())
    }

    /// `DELETE /v2/<name>/manifests/<tag>`: removes the tag alone.
    pub async fn delete_tag(&self, repo: &Name, tag: &Tag) -> Result<()> {
        let key = keys::repo_tag(repo, tag);
        if !self.exists(&key).await? {
            return Err(V2Error::ManifestUnknown);
        }
        self.store().delete(&key).await?;
        Ok(())
    }

    /// `GET /v2/<name>/tags/list`: the repository's tags in lexical order, paged. A repository
    /// no manifest was ever pushed to is [`V2Error::NameUnknown`].
    pub async fn tags(&self, repo: &Name, query: &PageQuery) -> Result<TagPage> {
        if !self.exists(&keys::catalog_entry(repo)).await? {
            return Err(V2Error::NameUnknown);
        }
        let prefix = keys::repo_tags(repo);
        let all = self
            .store()
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|k| keys::tag_from_key(k, &prefix))
            .map(|t| t.as_str().to_string())
            .collect();
        Ok(page(all, query))
    }

    /// Whether a manifest was ever pushed to `repo` (it is in the catalog).
    pub async fn repository_exists(&self, repo: &Name) -> Result<bool> {
        self.exists(&keys::catalog_entry(repo)).await
    }

    /// `GET /v2/_catalog`: every repository a manifest was pushed to, in lexical order, paged.
    pub async fn catalog(&self, query: &PageQuery) -> Result<ListPage> {
        let all = self
            .store()
            .list(&keys::catalog())
            .await?
            .iter()
            .filter_map(keys::catalog_name_from_key)
            .map(|n| n.as_str().to_string())
            .collect();
        Ok(page(all, query))
    }

    /// `GET /v2/<name>/referrers/<digest>`: the manifests of `repo` whose subject is `subject`,
    /// of `artifact_type` when one is given; and whether that filter was applied. A subject
    /// nobody refers to (or that does not exist) has an empty list.
    pub async fn referrers(
        &self,
        repo: &Name,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<(ReferrersIndex, bool)> {
        let store = self.store();
        let prefix = keys::repo_referrers(repo, subject);
        let mut entries: Vec<Descriptor> = Vec::new();
        for key in store.list(&prefix).await? {
            let Some(referrer) = keys::digest_from_key(&key, &prefix) else {
                continue;
            };
            // An entry left by an interrupted delete names a manifest no longer served.
            if !self
                .exists(&keys::repo_manifest_revision(repo, &referrer))
                .await?
            {
                continue;
            }
            let bytes = match store.get_bytes(&key, MAX_RECORD_BYTES).await {
                Ok(b) => b,
                Err(StorageError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            entries.push(serde_json::from_slice(&bytes).map_err(|e| corrupt(&key, e))?);
        }
        Ok(ReferrersIndex::build(entries, artifact_type))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::oci::ErrorCode;
    use crate::oci::manifest::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    fn tag(s: &str) -> Reference {
        Reference::Tag(s.parse().unwrap())
    }

    fn image(config: &Digest, layer: &Digest, extra: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]{extra}}}"#
        ))
    }

    fn index(child: &Digest, size: usize) -> Bytes {
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{child}","size":{size}}}]}}"#
        ))
    }

    /// An artifact of `artifact_type` referring to `subject`, with only the empty config.
    fn artifact(artifact_type: &str, subject: &Digest, config: &Digest) -> Bytes {
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact_type}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":10}}}}"#
        ))
    }

    async fn push_blobs(v2: &V2<'_>, repo: &Name) -> (Digest, Digest) {
        let config = Digest::sha256(b"{}");
        let layer = Digest::sha256(b"layer");
        v2.put_blob(repo, &config, body(&[b"{}"])).await.unwrap();
        v2.put_blob(repo, &layer, body(&[b"layer"])).await.unwrap();
        (config, layer)
    }

    #[tokio::test]
    async fn a_manifest_needs_its_blobs_in_the_repository_and_is_served_verbatim() {
        let store = memory_store();
        let reg = registry(&store);
        let v2 = reg.v2();
        let (a, b) = (name("a"), name("b"));
        let (config, layer) = push_blobs(&v2, &a).await;
        // The blobs are in the store but not linked into b.
        let m = image(&config, &layer, "");
        let e = v2
            .put_manifest(&b, &tag("v1"), m.clone(), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::ManifestBlobUnknown);
        assert!(matches!(
            v2.tags(&b, &PageQuery::default()).await,
            Err(V2Error::NameUnknown)
        ));

        let put = v2
            .put_manifest(&a, &tag("v1"), m.clone(), None)
            .await
            .unwrap();
        assert_eq!(put.digest, Digest::sha256(&m));
        assert_eq!(put.subject, None);
        for reference in [tag("v1"), Reference::Digest(put.digest.clone())] {
            let got = v2.manifest(&a, &reference).await.unwrap();
            assert_eq!(got.bytes, m);
            assert_eq!(got.info.digest, put.digest);
            assert_eq!(got.info.media_type, OCI_MANIFEST);
            assert_eq!(got.info.size, m.len() as u64);
        }
        assert!(matches!(
            v2.manifest(&b, &Reference::Digest(put.digest.clone()))
                .await,
            Err(V2Error::ManifestUnknown)
        ));
        assert!(matches!(
            v2.manifest_info(&a, &tag("v2")).await,
            Err(V2Error::ManifestUnknown)
        ));

        // By digest: the bytes must hash to it; a sha512 digest is taken.
        let wrong = Reference::Digest(Digest::sha256(b"other"));
        let e = v2
            .put_manifest(&a, &wrong, m.clone(), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::DigestInvalid);
        let long = Digest::of(crate::oci::Algorithm::Sha512, &m);
        let put512 = v2
            .put_manifest(&a, &Reference::Digest(long.clone()), m.clone(), None)
            .await
            .unwrap();
        assert_eq!(put512.digest, long);

        // An index needs its children in the repository.
        let idx = index(&put.digest, m.len());
        let e = v2.put_manifest(&b, &tag("multi"), idx.clone(), None).await;
        assert_eq!(e.unwrap_err().code(), ErrorCode::ManifestBlobUnknown);
        v2.put_manifest(&a, &tag("multi"), idx.clone(), None)
            .await
            .unwrap();
        let got = v2.manifest(&a, &tag("multi")).await.unwrap();
        assert_eq!(got.info.media_type, OCI_INDEX);

        // Bad bodies are MANIFEST_INVALID.
        let e = v2
            .put_manifest(&a, &tag("bad"), Bytes::from_static(b"[]"), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::ManifestInvalid);
    }

    #[tokio::test]
    async fn referrers_are_recorded_filtered_and_forgotten_with_their_manifest() {
        let store = memory_store();
        let reg = registry(&store);
        let v2 = reg.v2();
        let repo = name("a");
        let (config, _) = push_blobs(&v2, &repo).await;
        // The subject does not exist: a referrer may come first.
        let subject = Digest::sha256(b"not pushed yet");
        let sig = artifact("application/x.sig", &subject, &config);
        let sbom = artifact("application/x.sbom", &subject, &config);
        let put = v2
            .put_manifest(
                &repo,
                &Reference::Digest(Digest::sha256(&sig)),
                sig.clone(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(put.subject, Some(subject.clone()));
        let sbom_put = v2
            .put_manifest(&repo, &tag("sbom"), sbom.clone(), None)
            .await
            .unwrap();

        let (all, filtered) = v2.referrers(&repo, &subject, None).await.unwrap();
        assert!(!filtered);
        let mut want = vec![put.digest.clone(), sbom_put.digest.clone()];
        want.sort();
        let got: Vec<Digest> = all.manifests.iter().map(|d| d.digest.clone()).collect();
        assert_eq!(got, want);
        let (sigs, filtered) = v2
            .referrers(&repo, &subject, Some("application/x.sig"))
            .await
            .unwrap();
        assert!(filtered);
        assert_eq!(sigs.manifests.len(), 1);
        assert_eq!(sigs.manifests[0].digest, put.digest);
        assert_eq!(
            sigs.manifests[0].artifact_type.as_deref(),
            Some("application/x.sig")
        );
        assert_eq!(sigs.manifests[0].size, sig.len() as u64);
        let (other, _) = v2.referrers(&name("b"), &subject, None).await.unwrap();
        assert!(other.manifests.is_empty());

        // Deleting the referrer by digest removes it, its tag, and its referrer entry.
        v2.delete_manifest(&repo, &sbom_put.digest).await.unwrap();
        let (all, _) = v2.referrers(&repo, &subject, None).await.unwrap();
        assert_eq!(all.manifests.len(), 1);
        assert!(matches!(
            v2.manifest(&repo, &tag("sbom")).await,
            Err(V2Error::ManifestUnknown)
        ));
        let tags = v2.tags(&repo, &PageQuery::default()).await.unwrap();
        assert!(tags.items.is_empty());
        assert!(matches!(
            v2.delete_manifest(&repo, &sbom_put.digest).await,
            Err(V2Error::ManifestUnknown)
        ));
    }

    #[tokio::test]
    async fn a_tag_is_deleted_alone_and_listings_page_in_order() {
        let store = memory_store();
        let reg = registry(&store);
        let v2 = reg.v2();
        let repo = name("lib/app");
        let (config, layer) = push_blobs(&v2, &repo).await;
        let m = image(&config, &layer, "");
        for t in ["v2", "latest", "v1", "a"] {
            v2.put_manifest(&repo, &tag(t), m.clone(), None)
                .await
                .unwrap();
        }
        let q = |n: Option<usize>, last: Option<&str>| PageQuery {
            n,
            last: last.map(str::to_string),
        };
        let all = v2.tags(&repo, &q(None, None)).await.unwrap();
        assert_eq!(all.items, ["a", "latest", "v1", "v2"]);
        assert_eq!(all.next_last, None);
        let first = v2.tags(&repo, &q(Some(2), None)).await.unwrap();
        assert_eq!(first.items, ["a", "latest"]);
        assert_eq!(first.next_last.as_deref(), Some("latest"));
        let second = v2.tags(&repo, &q(Some(2), Some("latest"))).await.unwrap();
        assert_eq!(second.items, ["v1", "v2"]);
        assert_eq!(second.next_last, None);

        v2.delete_tag(&repo, &"latest".parse().unwrap())
            .await
            .unwrap();
        assert!(matches!(
            v2.delete_tag(&repo, &"latest".parse().unwrap()).await,
            Err(V2Error::ManifestUnknown)
        ));
        // The manifest stays, under its digest and its other tags.
        let got = v2.manifest(&repo, &tag("v1")).await.unwrap();
        v2.manifest(&repo, &Reference::Digest(got.info.digest))
            .await
            .unwrap();

        for r in ["z", "b/c", "b"] {
            let r = name(r);
            let (config, layer) = push_blobs(&v2, &r).await;
            v2.put_manifest(&r, &tag("t"), image(&config, &layer, ""), None)
                .await
                .unwrap();
        }
        let cat = v2.catalog(&q(None, None)).await.unwrap();
        assert_eq!(cat.items, ["b", "b/c", "lib/app", "z"]);
        let cat = v2.catalog(&q(Some(1), Some("b"))).await.unwrap();
        assert_eq!(cat.items, ["b/c"]);
        assert_eq!(cat.next_last.as_deref(), Some("b/c"));
    }

    #[tokio::test]
    async fn manifests_on_a_local_directory_store() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::storage::open(&crate::storage::StorageConfig::Local(dir.path().into())).unwrap();
        let reg = registry(&store);
        let v2 = reg.v2();
        let repo = name("a/b");
        let (config, layer) = push_blobs(&v2, &repo).await;
        let m = image(&config, &layer, r#","annotations":{"k":"v"}"#);
        let put = v2
            .put_manifest(&repo, &tag("v1"), m.clone(), None)
            .await
            .unwrap();
        // Another registry on the same directory serves it.
        let other = registry(&store);
        let got = other.v2().manifest(&repo, &tag("v1")).await.unwrap();
        assert_eq!(got.bytes, m);
        assert_eq!(got.info.digest, put.digest);
        let tags = other.v2().tags(&repo, &PageQuery::default()).await.unwrap();
        assert_eq!(tags.items, ["v1"]);
        other
            .v2()
            .delete_manifest(&repo, &put.digest)
            .await
            .unwrap();
        assert!(matches!(
            v2.manifest(&repo, &tag("v1")).await,
            Err(V2Error::ManifestUnknown)
        ));
    }
}
