//! Storage keys of the v2 (OCI Distribution) content, built only from validated newtypes
//! ([`Name`], [`Digest`], [`Tag`], [`UploadId`]).
//!
//! Layout (close to the reference registry's `registry/storage/paths.go`, so it reads the same):
//! ```text
//! v2/blobs/<alg>/<hex[..2]>/<hex>/data             blob bytes (manifests too), once per store
//! v2/repositories/<name...>/_layers/<alg>/<hex>    the blob is linked into the repository
//! v2/repositories/<name...>/_manifests/revisions/<alg>/<hex>   the manifest is in the repository
//! v2/repositories/<name...>/_manifests/tags/<tag>  one object per tag: the manifest it names
//! v2/repositories/<name...>/_referrers/<alg>/<hex>/<alg>/<hex>
//!                                                  one object per referrer of a subject
//!                                                  (subject digest, then the referrer's)
//! v2/catalog/<name...>/_repo                       the repository exists (for `/v2/_catalog`)
//! v2/uploads/<uuid>/state                          an upload session's state
//! v2/uploads/<uuid>/parts/<offset, 20 digits>      one object per chunk received
//! ```
//! `<name...>` is the name's components as segments. Why this is safe and loses nothing:
//! - No traversal: every segment is a name component, a tag, an algorithm, lowercase hex, a
//!   canonical UUID, a number or a literal; none of those can be empty, `.` or `..` (the
//!   newtypes guarantee it).
//! - No collision between a repository's own entries and a deeper repository: name components
//!   never start with `_`, and every per-repository entry sits under a `_` segment. So
//!   `a/_manifests/...` is repository `a`'s, and repository `a/b` lives under `a/b/`.
//! - No lost updates on stores without compare-and-swap: every link, tag, referrer, catalog
//!   entry and upload chunk is its own object, so concurrent writers never read-modify-write a
//!   shared list (the v1 layout's rule). Upload chunks are keyed by their offset, zero-padded so
//!   a listing returns them in order.
//! - Apart from v1: everything is under `v2/`, which no v1 key starts with.

use super::Key;
use crate::names::Tag;
use crate::oci::{Digest, Name, UploadId};

const ROOT: &str = "v2";

fn digest_segments(d: &Digest) -> [&str; 2] {
    [d.algorithm().as_str(), d.hex()]
}

/// Every blob, of every repository.
pub fn blobs() -> Key {
    Key::from_segments(&[ROOT, "blobs"])
}

/// A blob's bytes, stored once per store whichever repositories link it.
pub fn blob_data(d: &Digest) -> Key {
    let hex = d.hex();
    // Hex digests are 64 or 128 characters; the fan-out keeps directories of a local store
    // small.
    let fan = hex.get(..2).unwrap_or(hex);
    Key::from_segments(&[ROOT, "blobs", d.algorithm().as_str(), fan, hex, "data"])
}

/// The digest of a key listed under [`blobs`], if it is a blob's data.
pub fn blob_digest_from_key(key: &Key) -> Option<Digest> {
    let rest = key.strip_prefix(&blobs())?;
    let mut seg = rest.split('/');
    let (alg, fan, hex, data) = (seg.next()?, seg.next()?, seg.next()?, seg.next()?);
    if seg.next().is_some() || data != "data" || !hex.starts_with(fan) || fan.len() != 2 {
        return None;
    }
    format!("{alg}:{hex}").parse().ok()
}

fn repo_segments<'a>(name: &'a Name, tail: &[&'a str]) -> Vec<&'a str> {
    let mut segments = vec![ROOT, "repositories"];
    segments.extend(name.components());
    segments.extend_from_slice(tail);
    segments
}

/// Everything of repository `name`, and of the repositories nested below it.
pub fn repo_dir(name: &Name) -> Key {
    Key::from_segments(&repo_segments(name, &[]))
}

/// The blob links of a repository.
pub fn repo_blob_links(name: &Name) -> Key {
    Key::from_segments(&repo_segments(name, &["_layers"]))
}

/// The link that makes blob `d` readable through repository `name`.
pub fn repo_blob_link(name: &Name, d: &Digest) -> Key {
    let [alg, hex] = digest_segments(d);
    Key::from_segments(&repo_segments(name, &["_layers", alg, hex]))
}

/// The manifests of a repository, by digest.
pub fn repo_manifest_revisions(name: &Name) -> Key {
    Key::from_segments(&repo_segments(name, &["_manifests", "revisions"]))
}

/// The link that puts manifest `d` in repository `name`.
pub fn repo_manifest_revision(name: &Name, d: &Digest) -> Key {
    let [alg, hex] = digest_segments(d);
    Key::from_segments(&repo_segments(name, &["_manifests", "revisions", alg, hex]))
}

/// The tags of a repository.
pub fn repo_tags(name: &Name) -> Key {
    Key::from_segments(&repo_segments(name, &["_manifests", "tags"]))
}

/// One tag of a repository.
pub fn repo_tag(name: &Name, tag: &Tag) -> Key {
    Key::from_segments(&repo_segments(name, &["_manifests", "tags", tag.as_str()]))
}

/// The referrers of subject `subject` in repository `name`.
pub fn repo_referrers(name: &Name, subject: &Digest) -> Key {
    let [alg, hex] = digest_segments(subject);
    Key::from_segments(&repo_segments(name, &["_referrers", alg, hex]))
}

/// One referrer (manifest `referrer`) of `subject` in repository `name`.
pub fn repo_referrer(name: &Name, subject: &Digest, referrer: &Digest) -> Key {
    let [s_alg, s_hex] = digest_segments(subject);
    let [r_alg, r_hex] = digest_segments(referrer);
    Key::from_segments(&repo_segments(
        name,
        &["_referrers", s_alg, s_hex, r_alg, r_hex],
    ))
}

/// The digest at the end of a key listed under a `<alg>/<hex>` prefix ([`repo_blob_links`],
/// [`repo_manifest_revisions`], [`repo_referrers`]): the last two segments.
pub fn digest_from_key(key: &Key, prefix: &Key) -> Option<Digest> {
    let rest = key.strip_prefix(prefix)?;
    let (alg, hex) = rest.split_once('/')?;
    if hex.contains('/') {
        return None;
    }
    format!("{alg}:{hex}").parse().ok()
}

/// The tag of a key listed under [`repo_tags`].
pub fn tag_from_key(key: &Key, tags: &Key) -> Option<Tag> {
    let rest = key.strip_prefix(tags)?;
    if rest.contains('/') {
        return None;
    }
    rest.parse().ok()
}

/// The catalog: one marker per repository, and nothing else, so listing it costs one entry per
/// repository however many tags and blobs they hold.
pub fn catalog() -> Key {
    Key::from_segments(&[ROOT, "catalog"])
}

/// The marker that lists repository `name` in the catalog.
pub fn catalog_entry(name: &Name) -> Key {
    let mut segments = vec![ROOT, "catalog"];
    segments.extend(name.components());
    segments.push("_repo");
    Key::from_segments(&segments)
}

/// The repository a key listed under [`catalog`] marks.
pub fn catalog_name_from_key(key: &Key) -> Option<Name> {
    key.strip_prefix(&catalog())?
        .strip_suffix("/_repo")?
        .parse()
        .ok()
}

/// Every upload session, of every repository (for cleaning up abandoned ones).
pub fn uploads() -> Key {
    Key::from_segments(&[ROOT, "uploads"])
}

/// Everything of one upload session.
pub fn upload_dir(id: &UploadId) -> Key {
    Key::from_segments(&[ROOT, "uploads", id.as_str()])
}

/// An upload session's state (its repository, offset, start time), so any instance can
/// continue it.
pub fn upload_state(id: &UploadId) -> Key {
    Key::from_segments(&[ROOT, "uploads", id.as_str(), "state"])
}

/// The chunks received for an upload session.
pub fn upload_parts(id: &UploadId) -> Key {
    Key::from_segments(&[ROOT, "uploads", id.as_str(), "parts"])
}

/// The chunk of an upload session that starts at byte `offset`.
pub fn upload_part(id: &UploadId, offset: u64) -> Key {
    let offset = format!("{offset:020}");
    Key::from_segments(&[ROOT, "uploads", id.as_str(), "parts", &offset])
}

/// The offset of a chunk key listed under [`upload_parts`].
pub fn upload_part_offset(key: &Key, parts: &Key) -> Option<u64> {
    let rest = key.strip_prefix(parts)?;
    if rest.len() != 20 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The session a key listed under [`uploads`] belongs to.
pub fn upload_id_from_key(key: &Key) -> Option<UploadId> {
    key.strip_prefix(&uploads())?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    #[test]
    fn the_layout_is_as_documented() {
        let d = Digest::sha256(b"");
        let n = name("alice/tools/app");
        assert_eq!(
            blob_data(&d).as_str(),
            "v2/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/data"
        );
        assert_eq!(
            repo_blob_link(&n, &d).as_str(),
            format!("v2/repositories/alice/tools/app/_layers/sha256/{}", d.hex())
        );
        assert_eq!(
            repo_manifest_revision(&n, &d).as_str(),
            format!(
                "v2/repositories/alice/tools/app/_manifests/revisions/sha256/{}",
                d.hex()
            )
        );
        assert_eq!(
            repo_tag(&n, &tag("v1.0")).as_str(),
            "v2/repositories/alice/tools/app/_manifests/tags/v1.0"
        );
        assert_eq!(
            catalog_entry(&n).as_str(),
            "v2/catalog/alice/tools/app/_repo"
        );
        let id: UploadId = "6f1c9b8e-2a52-4bd8-9b1e-6c1d8e0a7f3b".parse().unwrap();
        assert_eq!(
            upload_part(&id, 4096).as_str(),
            "v2/uploads/6f1c9b8e-2a52-4bd8-9b1e-6c1d8e0a7f3b/parts/00000000000000004096"
        );
    }

    #[test]
    fn listed_keys_decode_back_to_what_built_them() {
        let n = name("a/b");
        let d = Digest::of(Algorithm::Sha512, b"x");
        let s = Digest::sha256(b"subject");
        assert_eq!(blob_digest_from_key(&blob_data(&d)), Some(d.clone()));
        assert_eq!(
            digest_from_key(&repo_blob_link(&n, &d), &repo_blob_links(&n)),
            Some(d.clone())
        );
        assert_eq!(
            digest_from_key(
                &repo_manifest_revision(&n, &d),
                &repo_manifest_revisions(&n)
            ),
            Some(d.clone())
        );
        assert_eq!(
            digest_from_key(&repo_referrer(&n, &s, &d), &repo_referrers(&n, &s)),
            Some(d.clone())
        );
        assert_eq!(
            tag_from_key(&repo_tag(&n, &tag("t")), &repo_tags(&n)),
            Some(tag("t"))
        );
        assert_eq!(catalog_name_from_key(&catalog_entry(&n)), Some(n.clone()));
        let id = UploadId::new_random();
        let parts = upload_parts(&id);
        let offsets = [0u64, 1, 5 << 20, u64::MAX];
        for o in offsets {
            assert_eq!(upload_part_offset(&upload_part(&id, o), &parts), Some(o));
        }
        // Lexical order of chunk keys is the order of their offsets.
        let mut keys: Vec<Key> = offsets.iter().rev().map(|&o| upload_part(&id, o)).collect();
        keys.sort();
        let sorted: Vec<u64> = keys
            .iter()
            .filter_map(|k| upload_part_offset(k, &parts))
            .collect();
        assert_eq!(sorted, offsets);
        assert_eq!(upload_id_from_key(&upload_state(&id)), Some(id.clone()));
        // Keys of other kinds do not decode as these.
        assert_eq!(catalog_name_from_key(&repo_tag(&n, &tag("t"))), None);
        assert_eq!(tag_from_key(&repo_blob_link(&n, &d), &repo_tags(&n)), None);
        assert_eq!(
            digest_from_key(&repo_tag(&n, &tag("t")), &repo_blob_links(&n)),
            None
        );
        assert_eq!(upload_part_offset(&upload_state(&id), &parts), None);
    }

    #[test]
    fn a_repository_entries_are_not_a_nested_repository() {
        // `a`'s tags and repository `a/b`'s tags share the `a/` prefix but never an entry
        // prefix: listing `a`'s tags does not see `a/b`'s.
        let a = name("a");
        let ab = name("a/b");
        let t = tag("latest");
        assert!(repo_tag(&ab, &t).strip_prefix(&repo_tags(&a)).is_none());
        assert!(repo_tag(&ab, &t).strip_prefix(&repo_dir(&a)).is_some());
        assert_ne!(repo_tags(&a), repo_dir(&name("a/b")));
    }

    /// The keys work on a real store: a local directory takes every segment, and listing a
    /// prefix returns exactly the entries built under it, which decode back.
    #[tokio::test]
    async fn a_local_store_lists_each_prefix_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::storage::open(&crate::storage::StorageConfig::Local(dir.path().into())).unwrap();
        let a = name("a");
        let ab = name("a/b.c__d-e");
        let d = Digest::sha256(b"blob");
        let s = Digest::of(Algorithm::Sha512, b"subject");
        let id = UploadId::new_random();
        for n in [&a, &ab] {
            for key in [
                repo_tag(n, &tag("v1.0")),
                repo_blob_link(n, &d),
                repo_manifest_revision(n, &d),
                repo_referrer(n, &s, &d),
                catalog_entry(n),
            ] {
                store
                    .put(&key, bytes::Bytes::from_static(b"x"))
                    .await
                    .unwrap();
            }
        }
        store
            .put(&blob_data(&d), bytes::Bytes::from_static(b"blob"))
            .await
            .unwrap();
        store
            .put(&upload_part(&id, 0), bytes::Bytes::from_static(b"p"))
            .await
            .unwrap();

        let tags = store.list(&repo_tags(&a)).await.unwrap();
        let tags: Vec<Tag> = tags
            .iter()
            .filter_map(|k| tag_from_key(k, &repo_tags(&a)))
            .collect();
        assert_eq!(tags, [tag("v1.0")]);
        let links = store.list(&repo_blob_links(&ab)).await.unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(
            digest_from_key(&links[0], &repo_blob_links(&ab)),
            Some(d.clone())
        );
        let referrers = store.list(&repo_referrers(&a, &s)).await.unwrap();
        assert_eq!(referrers.len(), 1);
        let mut names: Vec<Name> = store
            .list(&catalog())
            .await
            .unwrap()
            .iter()
            .filter_map(catalog_name_from_key)
            .collect();
        names.sort();
        assert_eq!(names, [a.clone(), ab.clone()]);
        let blobs = store.list(&blobs()).await.unwrap();
        assert_eq!(
            blobs
                .iter()
                .filter_map(blob_digest_from_key)
                .collect::<Vec<_>>(),
            [d]
        );
        let parts = store.list(&upload_parts(&id)).await.unwrap();
        assert_eq!(upload_part_offset(&parts[0], &upload_parts(&id)), Some(0));
    }

    /// Every key built for one set of inputs, each with a description of what built it.
    fn all_keys(
        n: &Name,
        t: &Tag,
        d: &Digest,
        s: &Digest,
        id: &UploadId,
        o: u64,
    ) -> Vec<(Key, String)> {
        vec![
            (blob_data(d), format!("blob {d}")),
            (repo_blob_link(n, d), format!("link {n} {d}")),
            (repo_manifest_revision(n, d), format!("revision {n} {d}")),
            (repo_tag(n, t), format!("tag {n} {}", t.as_str())),
            (repo_referrer(n, s, d), format!("referrer {n} {s} {d}")),
            (catalog_entry(n), format!("catalog {n}")),
            (upload_state(id), format!("state {id}")),
            (upload_part(id, o), format!("part {id} {o}")),
        ]
    }

    fn arb_name() -> impl Strategy<Value = Name> {
        proptest::collection::vec("[a-z0-9]{1,3}((\\.|_|__|-{1,2})[a-z0-9]{1,2})?", 1..4)
            .prop_map(|c| c.join("/").parse().unwrap())
    }

    fn arb_tag() -> impl Strategy<Value = Tag> {
        "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,5}".prop_map(|s| s.parse().unwrap())
    }

    fn arb_digest() -> impl Strategy<Value = Digest> {
        (any::<bool>(), 0u8..4).prop_map(|(long, b)| {
            let alg = if long {
                Algorithm::Sha512
            } else {
                Algorithm::Sha256
            };
            Digest::of(alg, &[b])
        })
    }

    fn arb_upload_id() -> impl Strategy<Value = UploadId> {
        (0u8..3).prop_map(|b| {
            format!("00000000-0000-4000-8000-00000000000{b}")
                .parse()
                .unwrap()
        })
    }

    proptest! {
        #[test]
        fn different_inputs_never_share_a_key(
            inputs in proptest::collection::vec(
                (arb_name(), arb_tag(), arb_digest(), arb_digest(), arb_upload_id(), 0u64..3),
                1..6,
            )
        ) {
            let mut seen: HashMap<Key, String> = HashMap::new();
            for (n, t, d, s, id, o) in &inputs {
                for (key, what) in all_keys(n, t, d, s, id, *o) {
                    if let Some(before) = seen.insert(key.clone(), what.clone()) {
                        prop_assert_eq!(&before, &what, "{} built by both", key);
                    }
                }
            }
        }

        #[test]
        fn keys_stay_under_their_prefix_and_have_no_unsafe_segment(
            n in arb_name(), m in arb_name(), t in arb_tag(), d in arb_digest(), s in arb_digest(),
            id in arb_upload_id(), o in any::<u64>(),
        ) {
            for (key, _) in all_keys(&n, &t, &d, &s, &id, o) {
                prop_assert!(key.as_str().starts_with("v2/"));
                for seg in key.as_str().split('/') {
                    prop_assert!(!seg.is_empty() && seg != "." && seg != "..", "{}", key);
                }
            }
            prop_assert!(repo_tag(&n, &t).strip_prefix(&repo_tags(&n)).is_some());
            prop_assert!(repo_blob_link(&n, &d).strip_prefix(&repo_blob_links(&n)).is_some());
            prop_assert!(repo_referrer(&n, &s, &d).strip_prefix(&repo_referrers(&n, &s)).is_some());
            prop_assert!(catalog_entry(&n).strip_prefix(&catalog()).is_some());
            prop_assert!(upload_part(&id, o).strip_prefix(&upload_parts(&id)).is_some());
            // Another repository's entries never fall under this one's entry prefixes.
            if m != n {
                for (key, _) in all_keys(&m, &t, &d, &s, &id, o) {
                    for prefix in [repo_tags(&n), repo_blob_links(&n), repo_manifest_revisions(&n), repo_referrers(&n, &s)] {
                        prop_assert!(key.strip_prefix(&prefix).is_none(), "{} under {}", key, prefix);
                    }
                }
                prop_assert_ne!(catalog_name_from_key(&catalog_entry(&m)), Some(n.clone()));
            }
        }
    }
}
