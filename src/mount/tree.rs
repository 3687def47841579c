//! The shape of the tree (MOUNT.md): which node a name under a parent is, decided from the
//! names alone, so a name that cannot exist answers ENOENT with no network call.

use crate::names::{ImageId, Namespace, RepoName, RepoRef, Tag};

/// A node of the tree, identified by what it is, not where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    /// `repositories/`
    Repos,
    /// `repositories/<ns>/`
    Namespace(Namespace),
    /// `repositories/<ns>/<repo>/`
    Repo(RepoRef),
    /// `repositories/<ns>/<repo>/tags/`
    Tags(RepoRef),
    /// `repositories/<ns>/<repo>/tags/<tag>`: "<id>\n"
    Tag(RepoRef, Tag),
    /// `repositories/<ns>/<repo>/images/`
    RepoImages(RepoRef),
    /// `repositories/<ns>/<repo>/images/<id>` -> `../../../../images/<id>`
    RepoImageLink(RepoRef, ImageId),
    /// `images/`
    Images,
    /// `images/<id>/`
    Image(ImageId),
    /// `images/<id>/{json,layer,ancestry}`
    ImageFile(ImageId, ImageFile),
    /// `images/<id>/parent` -> `../<parent>`
    ParentLink(ImageId),
    /// `search/`
    Search,
    /// `search/<term>`
    SearchResult(String),
    /// `.regfs/`: the mount's own control directory, hidden from listings of the root.
    Control,
    /// `.regfs/errors`: the last refusals, one line each.
    Errors,
}

/// The name of the control directory at the root.
pub const CONTROL_DIR: &str = ".regfs";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageFile {
    Json,
    Layer,
    Ancestry,
}

impl ImageFile {
    pub const ALL: [ImageFile; 3] = [ImageFile::Json, ImageFile::Layer, ImageFile::Ancestry];

    pub fn name(self) -> &'static str {
        match self {
            ImageFile::Json => "json",
            ImageFile::Layer => "layer",
            ImageFile::Ancestry => "ancestry",
        }
    }
}

/// What kind of inode a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// Longest search term looked up.
const MAX_TERM: usize = 255;

impl Node {
    pub fn kind(&self) -> Kind {
        match self {
            Node::Tag(..) | Node::ImageFile(..) | Node::SearchResult(_) | Node::Errors => {
                Kind::File
            }
            Node::RepoImageLink(..) | Node::ParentLink(_) => Kind::Symlink,
            _ => Kind::Dir,
        }
    }

    /// Whether the node's content can never change (a complete image's files).
    pub fn is_immutable(&self) -> bool {
        matches!(
            self,
            Node::Image(_) | Node::ImageFile(..) | Node::ParentLink(_) | Node::RepoImageLink(..)
        )
    }

    /// The child called `name`, if the name is valid there. Whether it exists is for the
    /// registry to say.
    pub fn child(&self, name: &str) -> Option<Node> {
        Some(match self {
            Node::Root => match name {
                "repositories" => Node::Repos,
                "images" => Node::Images,
                "search" => Node::Search,
                CONTROL_DIR => Node::Control,
                _ => return None,
            },
            Node::Control => match name {
                "errors" => Node::Errors,
                _ => return None,
            },
            Node::Repos => Node::Namespace(name.parse().ok()?),
            Node::Namespace(ns) => {
                let repo: RepoName = name.parse().ok()?;
                if ns.is_library() && RepoRef::library(name).is_err() {
                    return None;
                }
                Node::Repo(RepoRef::new(ns.clone(), repo))
            }
            Node::Repo(r) => match name {
                "tags" => Node::Tags(r.clone()),
                "images" => Node::RepoImages(r.clone()),
                _ => return None,
            },
            Node::Tags(r) => Node::Tag(r.clone(), name.parse().ok()?),
            Node::RepoImages(r) => Node::RepoImageLink(r.clone(), long_id(name)?),
            Node::Images => Node::Image(long_id(name)?),
            Node::Image(id) => match name {
                "json" => Node::ImageFile(id.clone(), ImageFile::Json),
                "layer" => Node::ImageFile(id.clone(), ImageFile::Layer),
                "ancestry" => Node::ImageFile(id.clone(), ImageFile::Ancestry),
                "parent" => Node::ParentLink(id.clone()),
                _ => return None,
            },
            Node::Search => {
                if name.is_empty() || name.len() > MAX_TERM || name.starts_with('.') {
                    return None;
                }
                Node::SearchResult(name.to_string())
            }
            _ => return None,
        })
    }
}

impl Node {
    /// The node's path relative to the mountpoint ("" for the root), as logs and
    /// `.regfs/errors` name it.
    pub fn path(&self) -> String {
        match self {
            Node::Root => String::new(),
            Node::Repos => "repositories".into(),
            Node::Namespace(ns) => format!("repositories/{ns}"),
            Node::Repo(r) => format!("repositories/{r}"),
            Node::Tags(r) => format!("repositories/{r}/tags"),
            Node::Tag(r, t) => format!("repositories/{r}/tags/{t}"),
            Node::RepoImages(r) => format!("repositories/{r}/images"),
            Node::RepoImageLink(r, id) => format!("repositories/{r}/images/{id}"),
            Node::Images => "images".into(),
            Node::Image(id) => format!("images/{id}"),
            Node::ImageFile(id, f) => format!("images/{id}/{}", f.name()),
            Node::ParentLink(id) => format!("images/{id}/parent"),
            Node::Search => "search".into(),
            Node::SearchResult(term) => format!("search/{term}"),
            Node::Control => CONTROL_DIR.into(),
            Node::Errors => format!("{CONTROL_DIR}/errors"),
        }
    }
}

/// The mount-relative path of `name` in directory `parent`, whether or not it is valid there.
pub fn child_path(parent: &Node, name: &str) -> String {
    let dir = parent.path();
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Image directories use the full 64-hex form only, so each image has one path.
fn long_id(name: &str) -> Option<ImageId> {
    (name.len() == 64).then(|| name.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(path: &[&str]) -> Option<Node> {
        path.iter().try_fold(Node::Root, |n, name| n.child(name))
    }

    #[test]
    fn valid_paths_resolve_to_nodes() {
        let id = "a".repeat(64);
        assert!(matches!(
            walk(&["repositories", "alice", "app", "tags", "v1"]),
            Some(Node::Tag(..))
        ));
        assert!(matches!(
            walk(&["images", &id, "layer"]),
            Some(Node::ImageFile(_, ImageFile::Layer))
        ));
        assert!(matches!(
            walk(&["images", &id, "parent"]),
            Some(Node::ParentLink(_))
        ));
        assert!(matches!(
            walk(&["search", "ubuntu"]),
            Some(Node::SearchResult(_))
        ));
        assert!(matches!(
            walk(&["repositories", "library", "busybox", "images", &id]),
            Some(Node::RepoImageLink(..))
        ));
    }

    #[test]
    fn invalid_names_never_become_nodes() {
        let id = "a".repeat(64);
        for path in [
            vec!["nope"],
            vec!["repositories", "ab"],
            vec!["repositories", "Alice"],
            vec!["repositories", "alice", ".."],
            vec!["repositories", "alice", "app", "other"],
            vec!["repositories", "alice", "app", "tags", "-x"],
            vec!["repositories", "library", id.as_str()],
            vec!["images", "abc"],
            vec!["images", "0123456789abcdef"],
            vec!["images", id.as_str(), "other"],
            vec!["search", ".hidden"],
            vec![".regfs", "other"],
            vec!["images", ".regfs"],
        ] {
            assert_eq!(walk(&path), None, "{path:?}");
        }
    }

    #[test]
    fn every_node_names_its_path_from_the_root() {
        let id = "a".repeat(64);
        for path in [
            "repositories/alice/app/tags/v1",
            "repositories/library/busybox/images",
            &format!("repositories/alice/app/images/{id}"),
            &format!("images/{id}/json"),
            &format!("images/{id}/parent"),
            "search/ubuntu",
            ".regfs/errors",
        ] {
            let node = walk(&path.split('/').collect::<Vec<_>>()).unwrap();
            assert_eq!(node.path(), path);
        }
        assert_eq!(child_path(&Node::Root, "x"), "x");
        assert_eq!(child_path(&Node::Images, "x"), "images/x");
    }
}
