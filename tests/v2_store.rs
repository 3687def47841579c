//! The v2 registry logic over stores that fail on purpose: finishing an upload whose chunks
//! cannot be read back whole, or whose blob cannot be written, publishes and links nothing,
//! and the session finishes once the store is healthy again.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream;
use regfs::oci::{Digest, Name, Reference};
use regfs::registry::v2::V2Error;
use regfs::registry::{Registry, RegistryConfig};
use regfs::storage::faulty::{Fault, Faults, FaultyStore, Op};
use regfs::storage::{BlobStore, ObjectBackend, keys::v2 as keys};

fn body(chunks: &[&[u8]]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let v: Vec<Result<Bytes, std::io::Error>> = chunks
        .iter()
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(v)
}

fn faulty() -> (Arc<dyn BlobStore>, Faults, Registry) {
    let inner: Arc<dyn BlobStore> = Arc::new(ObjectBackend::memory());
    let faults = Faults::new(22);
    let store: Arc<dyn BlobStore> = Arc::new(FaultyStore::new(inner.clone(), faults.clone()));
    let registry = Registry::new(store, RegistryConfig::default());
    (inner, faults, registry)
}

#[tokio::test]
async fn a_finish_the_store_breaks_publishes_nothing_and_can_be_retried() {
    let cases = [
        Fault::short_read(2).on_keys("/parts/"),
        Fault::broken_read(2).on_keys("/parts/"),
        Fault::error(Op::Get).on_keys("/parts/"),
        Fault::error(Op::UploadWrite),
        Fault::error(Op::UploadFinish),
        Fault::error(Op::UploadStart),
    ];
    for fault in cases {
        let what = format!("{fault:?}");
        let (inner, faults, registry) = faulty();
        let v2 = registry.v2();
        let repo: Name = "alice/app".parse().unwrap();
        let id = v2.start_upload(&repo).await.unwrap();
        for part in [&b"first "[..], b"second ", b"third"] {
            v2.append_chunk(&repo, &id, None, None, body(&[part]))
                .await
                .unwrap();
        }
        let digest = Digest::sha256(b"first second third");
        faults.arm(fault);
        let e = v2.finish_upload(&repo, &id, &digest).await.unwrap_err();
        // The store's failure (503), not the client's: the client may retry the PUT.
        assert!(matches!(e, V2Error::Storage(_)), "{what}: {e}");
        inner.settled().await;
        assert!(
            inner.list(&keys::blobs()).await.unwrap().is_empty(),
            "{what}"
        );
        faults.clear();
        assert!(!v2.blob_linked(&repo, &digest).await.unwrap(), "{what}");
        assert_eq!(v2.upload_status(&repo, &id).await.unwrap().offset, 18);
        assert_eq!(v2.finish_upload(&repo, &id, &digest).await.unwrap(), 18);
        assert_eq!(v2.blob_size(&repo, &digest).await.unwrap(), 18, "{what}");
    }
}

#[tokio::test]
async fn empty_blobs_upload_both_ways() {
    let (_, _, registry) = faulty();
    let v2 = registry.v2();
    let repo: Name = "a".parse().unwrap();
    let empty = Digest::sha256(b"");
    let id = v2.start_upload(&repo).await.unwrap();
    v2.append_chunk(&repo, &id, Some(0), None, body(&[]))
        .await
        .unwrap();
    assert_eq!(v2.finish_upload(&repo, &id, &empty).await.unwrap(), 0);
    assert_eq!(v2.blob_size(&repo, &empty).await.unwrap(), 0);
    let b: Name = "b".parse().unwrap();
    assert_eq!(v2.put_blob(&b, &empty, body(&[])).await.unwrap(), 0);
    assert_eq!(v2.blob_size(&b, &empty).await.unwrap(), 0);
}

#[tokio::test]
async fn a_manifest_put_the_store_breaks_is_not_served_and_can_be_retried() {
    let (_, faults, registry) = faulty();
    let v2 = registry.v2();
    let repo: Name = "a".parse().unwrap();
    let config = Digest::sha256(b"{}");
    v2.put_blob(&repo, &config, body(&[b"{}"])).await.unwrap();
    let manifest = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[]}}"#
    ));
    let tag: Reference = "latest".parse().unwrap();
    faults.arm(Fault::error(Op::Put).on_keys("_manifests/revisions"));
    let e = v2
        .put_manifest(&repo, &tag, manifest.clone(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, V2Error::Storage(_)), "{e}");
    faults.clear();
    assert!(matches!(
        v2.manifest(&repo, &tag).await,
        Err(V2Error::ManifestUnknown)
    ));
    let put = v2
        .put_manifest(&repo, &tag, manifest.clone(), None)
        .await
        .unwrap();
    let got = v2.manifest(&repo, &tag).await.unwrap();
    assert_eq!((got.info.digest, got.bytes), (put.digest, manifest));
}
