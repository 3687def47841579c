//! Validated names of the OCI Distribution protocol: repository names, references (a tag or a
//! digest) and upload session ids.
//!
//! A repository name follows the distribution-spec grammar
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255 bytes
//! in all. So every component is a safe path segment: never empty, never `.` or `..`, never
//! starting with `_` (storage uses `_`-prefixed segments for its own entries beside names), and
//! the name as a whole has no leading, trailing or doubled `/`. Tags keep the v1 grammar, which
//! the v2 spec repeats (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`), so [`crate::names::Tag`] serves
//! both protocols.

use std::fmt;
use std::str::FromStr;

pub use crate::names::Tag;

use super::digest::{Digest, DigestError};

/// The longest repository name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Why a name, reference or upload id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid repository name")]
    Name,
    #[error("invalid tag")]
    Tag,
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("invalid upload id")]
    UploadId,
}

/// One `/`-separated component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Walk the separator runs between alphanumeric runs.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A repository name, such as `library/alpine` or `alice/tools/app`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components, each a safe path segment.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The first component: the account that owns the name under the permission rules
    /// (`alice` of `alice/app`); for a single-component name, the name itself.
    pub fn first_component(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// Whether the name has a single component (`alpine`), which the rules give to the admin.
    pub fn is_single_component(&self) -> bool {
        !self.0.contains('/')
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(is_component) {
            return Err(NameError::Name);
        }
        Ok(Name(s.to_string()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format_args!("{e}: {s:?}")))
    }
}

/// What a manifest URL names: a tag, or a manifest by digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(t) => t.as_str(),
            Reference::Digest(d) => d.as_str(),
        }
    }
}

impl FromStr for Reference {
    type Err = NameError;
    /// A tag never contains `:`, a digest always does, so the two cannot be confused.
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            s.parse().map(Reference::Tag).map_err(|_| NameError::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of a blob upload session: a random UUID, in its lowercase hyphenated form only, so
/// one session has one id string and the id is a safe path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh, unguessable id.
    pub fn new_random() -> Self {
        UploadId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let uuid = uuid::Uuid::try_parse(s).map_err(|_| NameError::UploadId)?;
        let canonical = uuid.hyphenated().to_string();
        if canonical != s {
            return Err(NameError::UploadId);
        }
        Ok(UploadId(canonical))
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_of_the_spec_are_accepted() {
        for good in [
            "a",
            "alpine",
            "library/alpine",
            "alice/tools/app",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "0/1/2",
            "my-org/my.app_v2__x",
        ] {
            let n: Name = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(n.as_str(), good);
        }
    }

    #[test]
    fn names_outside_the_grammar_are_refused() {
        let long = format!("{}/{}", "a".repeat(200), "b".repeat(55));
        for bad in [
            "",
            "/",
            "/a",
            "a/",
            "a//b",
            "A",
            "a/B",
            "a..b",
            "a._b",
            "a___b",
            "a-_b",
            "-a",
            "a-",
            "_a",
            "a/_b",
            ".",
            "..",
            "a/../b",
            "a/./b",
            "a b",
            "a:b",
            "é",
            long.as_str(),
        ] {
            assert_eq!(bad.parse::<Name>(), Err(NameError::Name), "{bad:?}");
        }
        let max = format!("{}/{}", "a".repeat(200), "b".repeat(54));
        assert_eq!(max.len(), MAX_NAME_LEN);
        assert!(max.parse::<Name>().is_ok());
    }

    #[test]
    fn the_first_component_owns_the_name() {
        let n: Name = "alice/tools/app".parse().unwrap();
        assert_eq!(n.first_component(), "alice");
        assert_eq!(
            n.components().collect::<Vec<_>>(),
            ["alice", "tools", "app"]
        );
        assert!(!n.is_single_component());
        let n: Name = "alpine".parse().unwrap();
        assert_eq!(n.first_component(), "alpine");
        assert!(n.is_single_component());
    }

    #[test]
    fn references_are_tags_or_digests() {
        let d = Digest::sha256(b"");
        assert_eq!(
            d.as_str().parse::<Reference>().unwrap(),
            Reference::Digest(d.clone())
        );
        assert!(
            matches!("latest".parse::<Reference>(), Ok(Reference::Tag(t)) if t.as_str() == "latest")
        );
        assert_eq!("la test".parse::<Reference>(), Err(NameError::Tag));
        assert_eq!(".x".parse::<Reference>(), Err(NameError::Tag));
        assert_eq!(
            "md5:abc".parse::<Reference>(),
            Err(NameError::Digest(DigestError::Unsupported))
        );
        assert_eq!(
            "sha256:abc".parse::<Reference>(),
            Err(NameError::Digest(DigestError::Invalid))
        );
    }

    #[test]
    fn upload_ids_are_canonical_uuids() {
        let id = UploadId::new_random();
        assert_eq!(id.as_str().parse::<UploadId>().unwrap(), id);
        assert!(id.as_str().to_uppercase().parse::<UploadId>().is_err());
        assert!(id.as_str().replace('-', "").parse::<UploadId>().is_err());
        assert!("../x".parse::<UploadId>().is_err());
        assert!("".parse::<UploadId>().is_err());
    }

    proptest! {
        #[test]
        fn accepted_names_are_safe_path_segments(s in "[a-z0-9._/-]{1,40}") {
            if let Ok(n) = s.parse::<Name>() {
                for c in n.components() {
                    prop_assert!(!c.is_empty() && c != "." && c != "..");
                    prop_assert!(!c.starts_with('_') && !c.starts_with('.') && !c.starts_with('-'));
                }
            }
        }

        #[test]
        fn generated_grammar_names_are_accepted(
            parts in proptest::collection::vec(("[a-z0-9]{1,5}", proptest::option::of(("(\\.|_|__|-{1,3})", "[a-z0-9]{1,5}"))), 1..5)
        ) {
            let s = parts
                .iter()
                .map(|(a, rest)| match rest {
                    Some((sep, b)) => format!("{a}{sep}{b}"),
                    None => a.clone(),
                })
                .collect::<Vec<_>>()
                .join("/");
            prop_assert_eq!(s.parse::<Name>().map(|n| n.to_string()), Ok(s.clone()));
        }
    }
}
