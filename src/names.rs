//! Validated names of the v1 protocol: namespaces, repositories, tags and image ids.
//!
//! Every name a client sends is parsed into one of these newtypes once, at the edge (HTTP path or
//! FUSE lookup), so the rest of the crate never handles an unchecked string. The rules are those
//! of the Docker 1.x client and the reference registry (API.md section 6), kept ASCII-only on
//! purpose: Rust's `\w` would admit Unicode letters that Go and Python 2 never did. Every accepted
//! name is also a safe single path component (no `/`, no `.` or `..`, at most 255 bytes).

use std::fmt;
use std::str::FromStr;

/// Longest name accepted for any single component; longer ones would hit filesystem limits.
pub const MAX_NAME_LEN: usize = 255;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid namespace: must be 4-30 characters of [a-z0-9_]")]
    Namespace,
    #[error("invalid repository name: must be [a-z0-9-_.], at most 255 characters")]
    Repository,
    #[error("invalid tag: must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")]
    Tag,
    #[error("invalid image ID")]
    ImageId,
    #[error("invalid username: must be 4-30 characters of [a-z0-9_]")]
    Username,
}

fn is_user_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

/// A namespace (the user part of `ns/repo`); `library` holds the official repositories.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    /// The namespace of official repositories, implied when a path names only a repository.
    pub fn library() -> Self {
        Namespace("library".to_string())
    }
    pub fn is_library(&self) -> bool {
        self.0 == "library"
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Namespace {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let ok = (4..=30).contains(&s.len()) && s.bytes().all(is_user_char);
        if ok {
            Ok(Namespace(s.to_string()))
        } else {
            Err(NameError::Namespace)
        }
    }
}

/// The repository part of `ns/repo`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_NAME_LEN
            && s != "."
            && s != ".."
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if ok {
            Ok(RepoName(s.to_string()))
        } else {
            Err(NameError::Repository)
        }
    }
}

/// A full repository reference, `namespace/repo`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoRef {
    pub namespace: Namespace,
    pub repo: RepoName,
}

impl RepoRef {
    pub fn new(namespace: Namespace, repo: RepoName) -> Self {
        RepoRef { namespace, repo }
    }

    /// Parses the one-segment (library) form: a bare repository name, which the Docker client
    /// refuses when it looks like an image id.
    pub fn library(repo: &str) -> Result<Self, NameError> {
        if ImageId::is_long_id(repo) {
            return Err(NameError::Repository);
        }
        Ok(RepoRef::new(Namespace::library(), repo.parse()?))
    }

    /// Parses `ns/repo`, or a bare `repo` as `library/repo`.
    pub fn parse_full(s: &str) -> Result<Self, NameError> {
        match s.split_once('/') {
            Some((ns, repo)) => Ok(RepoRef::new(ns.parse()?, repo.parse()?)),
            None => RepoRef::library(s),
        }
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.repo)
    }
}

/// A tag name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let ok = (1..=128).contains(&b.len())
            && word(b[0])
            && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-');
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(NameError::Tag)
        }
    }
}

/// An image id: 64 lowercase hex digits (the reference also accepts 16).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(String);

impl ImageId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    fn is_long_id(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

impl FromStr for ImageId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let hex = s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if hex && (s.len() == 64 || s.len() == 16) {
            Ok(ImageId(s.to_string()))
        } else {
            Err(NameError::ImageId)
        }
    }
}

/// An account name; the same rule as a namespace, since each user owns the namespace of its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The namespace this user may write to.
    pub fn namespace(&self) -> Namespace {
        Namespace(self.0.clone())
    }
}

impl FromStr for Username {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        s.parse::<Namespace>()
            .map(|ns| Username(ns.0))
            .map_err(|_| NameError::Username)
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    )*};
}
display_as_str!(Namespace, RepoName, Tag, ImageId, Username);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_the_hub_rule() {
        assert!("alice".parse::<Namespace>().is_ok());
        assert!("ab_9".parse::<Namespace>().is_ok());
        for bad in [
            "abc",
            "Alice",
            "a-b-c",
            "",
            &"a".repeat(31),
            "al/ce",
            "..",
            "alic\0",
        ] {
            assert!(bad.parse::<Namespace>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repository_names_refuse_traversal_and_overlong_names() {
        assert!("ubuntu".parse::<RepoName>().is_ok());
        assert!("my-app_v1.2".parse::<RepoName>().is_ok());
        assert!("a".repeat(255).parse::<RepoName>().is_ok());
        for bad in [
            ".",
            "..",
            "",
            "a/b",
            "A",
            "ü",
            &"a".repeat(256),
            "a b",
            "a%2fb",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn library_form_refuses_image_ids() {
        let id = "a".repeat(64);
        assert!(RepoRef::library(&id).is_err());
        assert_eq!(RepoRef::library("foo").unwrap().to_string(), "library/foo");
        assert_eq!(
            RepoRef::parse_full("alice/app").unwrap().to_string(),
            "alice/app"
        );
    }

    #[test]
    fn tags_are_ascii_words() {
        for good in ["latest", "1.0", "_x", "A-b.c_d", &"t".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good:?}");
        }
        for bad in ["", "-x", ".x", "é", "a/b", "a:b", &"t".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn image_ids_are_lowercase_hex() {
        assert!("0123456789abcdef".parse::<ImageId>().is_ok());
        assert!("f".repeat(64).parse::<ImageId>().is_ok());
        for bad in ["F".repeat(64), "g".repeat(64), "a".repeat(63), "..".into()] {
            assert!(bad.parse::<ImageId>().is_err(), "{bad:?}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Strings biased towards the edges of the rules: rule characters, separators, dots,
        /// upper case, non-ASCII, NUL, and lengths around every limit.
        fn name_like() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9_.\\-]{0,40}",
                "[a-zA-Z0-9_.\\-/%:@ \\x00]{0,40}",
                "[a-z0-9_]{28,32}",
                "[A-Za-z0-9_.\\-]{120,135}",
                "[a-z0-9.]{250,260}",
                "[0-9a-fA-F]{14,66}",
                any::<String>(),
                Just(".".to_string()),
                Just("..".to_string()),
            ]
        }

        fn user_rule(s: &str) -> bool {
            (4..=30).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }

        fn repo_rule(s: &str) -> bool {
            !s.is_empty()
                && s.len() <= MAX_NAME_LEN
                && s != "."
                && s != ".."
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
                })
        }

        fn tag_rule(s: &str) -> bool {
            let b = s.as_bytes();
            let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
            !b.is_empty()
                && b.len() <= 128
                && word(b[0])
                && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
        }

        fn id_rule(s: &str) -> bool {
            (s.len() == 64 || s.len() == 16)
                && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }

        /// A name accepted is a safe single path component.
        fn safe_component(s: &str) -> bool {
            !s.is_empty()
                && s.len() <= MAX_NAME_LEN
                && s != "."
                && s != ".."
                && !s.contains(['/', '\\', '\0', '%'])
                && s.is_ascii()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn every_parser_agrees_with_its_rule(s in name_like()) {
                let checks: [(bool, Option<String>); 5] = [
                    (user_rule(&s), s.parse::<Namespace>().ok().map(|n| n.to_string())),
                    (user_rule(&s), s.parse::<Username>().ok().map(|n| n.to_string())),
                    (repo_rule(&s), s.parse::<RepoName>().ok().map(|n| n.to_string())),
                    (tag_rule(&s), s.parse::<Tag>().ok().map(|n| n.to_string())),
                    (id_rule(&s), s.parse::<ImageId>().ok().map(|n| n.to_string())),
                ];
                for (i, (rule, parsed)) in checks.into_iter().enumerate() {
                    prop_assert_eq!(rule, parsed.is_some(), "parser {} on {:?}", i, s);
                    if let Some(shown) = parsed {
                        prop_assert_eq!(&shown, &s, "Display round-trips");
                        prop_assert!(safe_component(&shown), "{:?} is not a safe component", shown);
                    }
                }
            }

            #[test]
            fn full_references_round_trip(ns in name_like(), repo in name_like()) {
                let full = format!("{ns}/{repo}");
                match RepoRef::parse_full(&full) {
                    Ok(r) => {
                        prop_assert!(user_rule(&ns) && repo_rule(&repo));
                        prop_assert_eq!(r.to_string(), full.clone());
                        prop_assert_eq!(RepoRef::parse_full(&r.to_string()), Ok(r));
                    }
                    Err(_) => prop_assert!(!user_rule(&ns) || !repo_rule(&repo)),
                }
                match RepoRef::library(&repo) {
                    Ok(r) => {
                        prop_assert!(repo_rule(&repo) && !(repo.len() == 64 && id_rule(&repo)));
                        prop_assert_eq!(r.to_string(), format!("library/{repo}"));
                    }
                    Err(_) => prop_assert!(!repo_rule(&repo) || (repo.len() == 64 && id_rule(&repo))),
                }
            }
        }
    }
}
