//! The only place storage keys are built.
//!
//! Layout (our own, close to the reference registry's so it reads the same):
//! ```text
//! images/<id>/json                 image json, verbatim
//! images/<id>/layer                layer bytes, verbatim
//! images/<id>/ancestry             JSON list [id, parent, ...]
//! images/<id>/_checksum            {"payload": "sha256:..", "size": N}: computed while receiving the layer
//! images/<id>/_complete            written last, after a matching checksum: the image is served
//! repositories/<ns>/<repo>/_repo   marks the repository as existing
//! repositories/<ns>/<repo>/images/<id>   one object per listed image: {"id", "checksum"?}
//! repositories/<ns>/<repo>/tags/<tag>    {"id", "last_update", ...}: one object per tag
//! users/<name>                     account record with its argon2 hash
//! ```
//! One object per tag and per listed image keeps concurrent writers from losing each other's
//! updates on stores without compare-and-swap: no read-modify-write of shared lists.
//!
//! The v2 (OCI Distribution) content lives apart, under `v2/`: see [`v2`].

use std::fmt;

use crate::names::{ImageId, Namespace, RepoRef, Tag, Username};

pub mod v2;

/// A validated storage key, `/`-separated, with no empty, `.` or `..` segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Builds a key from segments that are already validated names or fixed literals.
    fn from_segments(segments: &[&str]) -> Key {
        Key(segments.join("/"))
    }

    /// Wraps a key read back from a listing.
    pub(crate) fn from_listing(raw: String) -> Key {
        Key(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment of the key.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The segments of the key after `prefix`, if it lies under it.
    pub fn strip_prefix<'a>(&'a self, prefix: &Key) -> Option<&'a str> {
        self.0.strip_prefix(prefix.as_str())?.strip_prefix('/')
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn image_json(id: &ImageId) -> Key {
    Key::from_segments(&["images", id.as_str(), "json"])
}
pub fn image_layer(id: &ImageId) -> Key {
    Key::from_segments(&["images", id.as_str(), "layer"])
}
pub fn image_ancestry(id: &ImageId) -> Key {
    Key::from_segments(&["images", id.as_str(), "ancestry"])
}
pub fn image_checksum(id: &ImageId) -> Key {
    Key::from_segments(&["images", id.as_str(), "_checksum"])
}
pub fn image_complete(id: &ImageId) -> Key {
    Key::from_segments(&["images", id.as_str(), "_complete"])
}

pub fn repositories() -> Key {
    Key::from_segments(&["repositories"])
}
pub fn namespace_dir(ns: &Namespace) -> Key {
    Key::from_segments(&["repositories", ns.as_str()])
}
pub fn repo_dir(repo: &RepoRef) -> Key {
    Key::from_segments(&["repositories", repo.namespace.as_str(), repo.repo.as_str()])
}
pub fn repo_marker(repo: &RepoRef) -> Key {
    Key::from_segments(&[
        "repositories",
        repo.namespace.as_str(),
        repo.repo.as_str(),
        "_repo",
    ])
}
pub fn repo_images(repo: &RepoRef) -> Key {
    Key::from_segments(&[
        "repositories",
        repo.namespace.as_str(),
        repo.repo.as_str(),
        "images",
    ])
}
pub fn repo_image(repo: &RepoRef, id: &ImageId) -> Key {
    Key::from_segments(&[
        "repositories",
        repo.namespace.as_str(),
        repo.repo.as_str(),
        "images",
        id.as_str(),
    ])
}
pub fn repo_tags(repo: &RepoRef) -> Key {
    Key::from_segments(&[
        "repositories",
        repo.namespace.as_str(),
        repo.repo.as_str(),
        "tags",
    ])
}
pub fn repo_tag(repo: &RepoRef, tag: &Tag) -> Key {
    Key::from_segments(&[
        "repositories",
        repo.namespace.as_str(),
        repo.repo.as_str(),
        "tags",
        tag.as_str(),
    ])
}

pub fn user(name: &Username) -> Key {
    Key::from_segments(&["users", name.as_str()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_under_their_repository() {
        let repo = RepoRef::parse_full("alice/app").unwrap();
        let tag: Tag = "latest".parse().unwrap();
        let key = repo_tag(&repo, &tag);
        assert_eq!(key.as_str(), "repositories/alice/app/tags/latest");
        assert_eq!(key.strip_prefix(&repo_tags(&repo)), Some("latest"));
        assert_eq!(key.file_name(), "latest");
        assert_eq!(key.strip_prefix(&repo_images(&repo)), None);
    }
}
