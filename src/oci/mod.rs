//! The OCI Distribution protocol's (Docker Registry v2's) vocabulary, shared by the v2 server
//! and the mount's v2 backend: digests, repository names and references, manifests and
//! descriptors, the spec's error codes and bodies, listing pagination, upload ranges and header
//! names, and the text of token auth (scopes and challenges).
//!
//! Everything here is pure: parsing and formatting, no I/O. Strings from the network are parsed
//! into these newtypes once, at the edge, and storage keys for v2 content are built only from
//! them (`storage::keys`), which is what keeps names with `/` from escaping their prefix.
//! Grammar and codes follow the OCI distribution-spec v1.1 (`spec.md`) and image-spec.

pub mod auth;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod name;
pub mod pagination;
pub mod upload;

pub use auth::{AccessEntry, Action, Challenge, Resource, Scope, ScopeError, TokenResponse};
pub use digest::{Algorithm, Digest, DigestError, DigestHasher};
pub use error::{ErrorBody, ErrorCode, ErrorInfo};
pub use manifest::{
    Descriptor, Manifest, ManifestError, ManifestKind, ReferrersIndex, parse_manifest,
};
pub use name::{Name, NameError, Reference, Tag, UploadId};
pub use pagination::{Page, PageError, PageQuery};
pub use upload::{ChunkRange, RangeError};
