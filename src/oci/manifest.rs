//! Manifests: media types, descriptors, and the one parser the server (on PUT) and the mount
//! (on read and on write) use to learn what a manifest references.
//!
//! Accepted: the OCI image manifest and image index, the Docker schema 2 manifest and manifest
//! list, and artifacts (an OCI manifest with `artifactType`, or whose config is of another media
//! type). Docker schema 1 is refused, as V2.md asks. The media type comes from the body's
//! `mediaType`, else from the `Content-Type`, else from the shape (`manifests` makes an index,
//! `config` a manifest); a body whose `mediaType` contradicts a manifest `Content-Type` is
//! refused rather than stored under a type that lies about it. The bytes themselves are never
//! rewritten: a manifest is stored and served byte for byte, and only parsed to be checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::ErrorCode;

/// Largest manifest accepted (V2.md: manifests over 4 MiB are 413).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The empty descriptor's media type (`{}`), the config of artifacts that have none.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Prefix of the OCI non-distributable layer types (deprecated, still found in the wild).
const OCI_NONDISTRIBUTABLE_PREFIX: &str = "application/vnd.oci.image.layer.nondistributable.";

/// The `Accept` header a client sends to get any manifest we understand.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The four kinds of manifest accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerManifestList,
}

impl ManifestKind {
    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::OciManifest => OCI_MANIFEST,
            ManifestKind::OciIndex => OCI_INDEX,
            ManifestKind::DockerManifest => DOCKER_MANIFEST,
            ManifestKind::DockerManifestList => DOCKER_MANIFEST_LIST,
        }
    }

    /// Whether manifests of this kind list other manifests (an index or a manifest list).
    pub fn is_index(self) -> bool {
        matches!(
            self,
            ManifestKind::OciIndex | ManifestKind::DockerManifestList
        )
    }

    /// The kind a media type names; schema 1 and anything else are errors.
    pub fn from_media_type(media_type: &str) -> Result<ManifestKind, ManifestError> {
        match media_type {
            OCI_MANIFEST => Ok(ManifestKind::OciManifest),
            OCI_INDEX => Ok(ManifestKind::OciIndex),
            DOCKER_MANIFEST => Ok(ManifestKind::DockerManifest),
            DOCKER_MANIFEST_LIST => Ok(ManifestKind::DockerManifestList),
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(ManifestError::Schema1),
            other => Err(ManifestError::UnsupportedMediaType(other.to_string())),
        }
    }
}

/// Whether a media type names a manifest (so a descriptor of it points at a manifest, not a
/// blob).
pub fn is_manifest_media_type(media_type: &str) -> bool {
    ManifestKind::from_media_type(media_type).is_ok()
}

/// The media type of a `Content-Type` header value: its part before any parameters,
/// lower-cased.
pub fn content_type_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Why a manifest was refused. All are `MANIFEST_INVALID` to the client except
/// [`ManifestError::TooLarge`], which the server answers with 413.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is larger than {MAX_MANIFEST_SIZE} bytes")]
    TooLarge,
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("schema 1 manifests are not supported")]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {field:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { field: String, header: String },
    #[error("cannot tell the manifest's media type: no mediaType, Content-Type or known shape")]
    UnknownShape,
    #[error("schemaVersion must be 2")]
    SchemaVersion,
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{0} is not allowed in this kind of manifest")]
    Unexpected(&'static str),
    #[error("{path}: {reason}")]
    Descriptor { path: String, reason: String },
}

impl ManifestError {
    /// The spec's error code for the client.
    pub fn code(&self) -> ErrorCode {
        match self {
            ManifestError::TooLarge => ErrorCode::SizeInvalid,
            _ => ErrorCode::ManifestInvalid,
        }
    }
}

/// The platform a manifest of an index is built for. `architecture` and `os` are required by
/// the image-spec, yet read leniently (empty when absent): an odd platform of one child must not
/// hide the other children of an index read from another registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// A content descriptor, validated: a typed digest and a non-negative size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A plain descriptor of content.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }

    /// Whether the blob lives outside registries (a Docker foreign layer or an OCI
    /// non-distributable one, with URLs), so a registry need not hold it.
    pub fn is_external(&self) -> bool {
        !self.urls.is_empty()
            && (self.media_type == DOCKER_FOREIGN_LAYER
                || self.media_type.starts_with(OCI_NONDISTRIBUTABLE_PREFIX))
    }
}

/// A descriptor as it comes off the wire, before validation, so errors can name the field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    size: Option<serde_json::Number>,
    #[serde(default)]
    urls: Option<Vec<String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    artifact_type: Option<String>,
}

/// A media type must at least look like one (`type/subtype`, printable ASCII, no spaces).
fn is_media_type(s: &str) -> bool {
    let printable = s.bytes().all(|b| b.is_ascii_graphic());
    matches!(s.split_once('/'), Some((t, st)) if !t.is_empty() && !st.is_empty()) && printable
}

impl RawDescriptor {
    fn validate(self, path: &str) -> Result<Descriptor, ManifestError> {
        let err = |reason: String| ManifestError::Descriptor {
            path: path.to_string(),
            reason,
        };
        let media_type = self
            .media_type
            .ok_or_else(|| err("mediaType is required".into()))?;
        if !is_media_type(&media_type) {
            return Err(err(format!("invalid mediaType {media_type:?}")));
        }
        let digest = self
            .digest
            .ok_or_else(|| err("digest is required".into()))?;
        let digest: Digest = digest.parse().map_err(|e| err(format!("{e} {digest:?}")))?;
        let size = self.size.ok_or_else(|| err("size is required".into()))?;
        let size = size
            .as_u64()
            .ok_or_else(|| err(format!("size must be a non-negative integer, not {size}")))?;
        if size > i64::MAX as u64 {
            return Err(err(format!("size {size} is too large")));
        }
        if let Some(t) = &self.artifact_type {
            if !is_media_type(t) {
                return Err(err(format!("invalid artifactType {t:?}")));
            }
        }
        Ok(Descriptor {
            media_type,
            digest,
            size,
            urls: self.urls.unwrap_or_default(),
            annotations: self.annotations.unwrap_or_default(),
            platform: self.platform,
            artifact_type: self.artifact_type,
        })
    }
}

/// The fields of any manifest kind, as they come off the wire.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<serde_json::Value>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    subject: Option<RawDescriptor>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    /// Only schema 1 has these: used to recognise it without a media type.
    #[serde(default)]
    fs_layers: Option<serde_json::Value>,
}

/// What a manifest says about its content, for the checks of a PUT and for the mount's listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub kind: ManifestKind,
    /// The image config (manifests only).
    pub config: Option<Descriptor>,
    /// The layers (manifests only; possibly empty for artifacts).
    pub layers: Vec<Descriptor>,
    /// The child manifests (indexes only).
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI referrers).
    pub subject: Option<Descriptor>,
    /// The `artifactType` field as given.
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    pub fn media_type(&self) -> &'static str {
        self.kind.media_type()
    }

    /// The artifact type the referrers API reports for this manifest: `artifactType`, else
    /// (for a manifest) its config's media type, as the distribution-spec says.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.as_str()))
    }

    /// Whether this is an artifact rather than a container image: it says so with
    /// `artifactType`, or its config is of another media type than an image config.
    pub fn is_artifact(&self) -> bool {
        self.artifact_type.is_some()
            || self
                .config
                .as_ref()
                .is_some_and(|c| c.media_type != OCI_CONFIG && c.media_type != DOCKER_CONFIG)
    }

    /// The blobs a repository must hold before this manifest is accepted: the config and the
    /// layers, less external (foreign) layers.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|d| !d.is_external()))
    }

    /// The manifests a repository must hold before this index is accepted.
    pub fn required_manifests(&self) -> impl Iterator<Item = &Descriptor> {
        self.manifests.iter()
    }

    /// This manifest's entry in its subject's referrers list.
    pub fn referrer_descriptor(&self, digest: Digest, size: u64) -> Descriptor {
        let mut d = Descriptor::new(self.media_type(), digest, size);
        d.artifact_type = self.effective_artifact_type().map(str::to_string);
        d.annotations = self.annotations.clone();
        d
    }
}

/// Parses manifest bytes, with the request's `Content-Type` if there was one.
pub fn parse_manifest(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
    if body.len() > MAX_MANIFEST_SIZE {
        return Err(ManifestError::TooLarge);
    }
    // serde would also take a struct from a JSON array; a manifest is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ManifestError::Json("a manifest is a JSON object".into()));
    }
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;

    // A Content-Type counts only if it names a manifest kind (or schema 1): clients send
    // `application/json` or `application/octet-stream` for anything.
    let header = content_type.map(content_type_essence);
    let header_kind = match header.as_deref() {
        Some(h) => match ManifestKind::from_media_type(h) {
            Ok(kind) => Some(kind),
            Err(ManifestError::Schema1) => return Err(ManifestError::Schema1),
            Err(_) => None,
        },
        None => None,
    };

    let kind = if let Some(field) = &raw.media_type {
        let kind = ManifestKind::from_media_type(field)?;
        if let (Some(hk), Some(h)) = (header_kind, &header) {
            if hk != kind {
                return Err(ManifestError::MediaTypeMismatch {
                    field: field.clone(),
                    header: h.clone(),
                });
            }
        }
        kind
    } else if let Some(kind) = header_kind {
        kind
    } else if raw.fs_layers.is_some()
        || raw.schema_version.as_ref().and_then(|v| v.as_u64()) == Some(1)
    {
        return Err(ManifestError::Schema1);
    } else if raw.manifests.is_some() {
        ManifestKind::OciIndex
    } else if raw.config.is_some() {
        ManifestKind::OciManifest
    } else {
        return Err(ManifestError::UnknownShape);
    };

    if raw.schema_version.as_ref().and_then(|v| v.as_u64()) != Some(2) {
        if raw.fs_layers.is_some() {
            return Err(ManifestError::Schema1);
        }
        return Err(ManifestError::SchemaVersion);
    }
    // The Docker formats predate these fields; the OCI ones carry them.
    let docker = matches!(
        kind,
        ManifestKind::DockerManifest | ManifestKind::DockerManifestList
    );
    if docker && raw.subject.is_some() {
        return Err(ManifestError::Unexpected("subject"));
    }
    if docker && raw.artifact_type.is_some() {
        return Err(ManifestError::Unexpected("artifactType"));
    }
    if let Some(t) = &raw.artifact_type {
        if !is_media_type(t) {
            return Err(ManifestError::Descriptor {
                path: "artifactType".into(),
                reason: format!("invalid media type {t:?}"),
            });
        }
    }

    let list = |items: Option<Vec<RawDescriptor>>, field: &str| {
        items
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, d)| d.validate(&format!("{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    let subject = raw.subject.map(|s| s.validate("subject")).transpose()?;
    let (config, layers, manifests) = if kind.is_index() {
        if raw.config.is_some() {
            return Err(ManifestError::Unexpected("config"));
        }
        if raw.layers.is_some() {
            return Err(ManifestError::Unexpected("layers"));
        }
        let manifests = raw.manifests.ok_or(ManifestError::Missing("manifests"))?;
        (None, Vec::new(), list(Some(manifests), "manifests")?)
    } else {
        if raw.manifests.is_some() {
            return Err(ManifestError::Unexpected("manifests"));
        }
        let config = raw.config.ok_or(ManifestError::Missing("config"))?;
        let config = config.validate("config")?;
        if docker && raw.layers.is_none() {
            return Err(ManifestError::Missing("layers"));
        }
        (Some(config), list(raw.layers, "layers")?, Vec::new())
    };
    Ok(Manifest {
        kind,
        config,
        layers,
        manifests,
        subject,
        artifact_type: raw.artifact_type,
        annotations: raw.annotations.unwrap_or_default(),
    })
}

/// The referrers response (`GET /v2/<name>/referrers/<digest>`): an OCI index of descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrersIndex {
    pub schema_version: u32,
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

impl ReferrersIndex {
    /// Builds the response from a subject's referrer descriptors, keeping only those of
    /// `artifact_type` when one is asked for. Returns the index and whether the filter was
    /// applied (the server then sends `OCI-Filters-Applied: artifactType`). Entries come out in
    /// digest order, so the answer does not depend on the order the store listed them in.
    pub fn build(mut referrers: Vec<Descriptor>, artifact_type: Option<&str>) -> (Self, bool) {
        let filtered = artifact_type.is_some();
        if let Some(want) = artifact_type {
            referrers.retain(|d| d.artifact_type.as_deref() == Some(want));
        }
        referrers.sort_by(|a, b| a.digest.cmp(&b.digest));
        referrers.dedup_by(|a, b| a.digest == b.digest);
        let index = ReferrersIndex {
            schema_version: 2,
            media_type: OCI_INDEX.to_string(),
            manifests: referrers,
        };
        (index, filtered)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Strings, numbers and maps always serialize; the fallback keeps this total.
        serde_json::to_vec(self).unwrap_or_else(|_| {
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#)
                .into_bytes()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn d(n: u8) -> Digest {
        Digest::sha256(&[n])
    }

    fn image(media_type: Option<&str>) -> serde_json::Value {
        let mut v = json!({
            "schemaVersion": 2,
            "config": {"mediaType": OCI_CONFIG, "digest": d(1), "size": 7},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(2), "size": 32},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(3), "size": 0}
            ],
            "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
        });
        if let Some(mt) = media_type {
            v["mediaType"] = json!(mt);
        }
        v
    }

    fn bytes(v: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn an_oci_image_manifest_gives_its_config_and_layers() {
        let m = parse_manifest(&bytes(&image(Some(OCI_MANIFEST))), None).unwrap();
        assert_eq!(m.kind, ManifestKind::OciManifest);
        assert_eq!(m.config.as_ref().unwrap().digest, d(1));
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[1].size, 0);
        let required: Vec<_> = m.required_blobs().map(|d| d.digest.clone()).collect();
        assert_eq!(required, [d(1), d(2), d(3)]);
        assert!(!m.is_artifact());
        assert_eq!(m.annotations.len(), 1);
    }

    #[test]
    fn the_media_type_comes_from_the_field_then_the_header_then_the_shape() {
        let no_field = bytes(&image(None));
        assert_eq!(
            parse_manifest(&no_field, None).unwrap().kind,
            ManifestKind::OciManifest
        );
        assert_eq!(
            parse_manifest(
                &no_field,
                Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8")
            )
            .unwrap()
            .kind,
            ManifestKind::DockerManifest
        );
        assert_eq!(
            parse_manifest(&no_field, Some("application/json"))
                .unwrap()
                .kind,
            ManifestKind::OciManifest
        );
        let docker = bytes(&image(Some(DOCKER_MANIFEST)));
        assert_eq!(
            parse_manifest(&docker, Some("application/octet-stream"))
                .unwrap()
                .kind,
            ManifestKind::DockerManifest
        );
        assert!(matches!(
            parse_manifest(&docker, Some(OCI_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let index = bytes(&json!({"schemaVersion": 2, "manifests": []}));
        assert_eq!(
            parse_manifest(&index, None).unwrap().kind,
            ManifestKind::OciIndex
        );
    }

    #[test]
    fn an_index_gives_its_children_with_platforms() {
        let v = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [
                {"mediaType": DOCKER_MANIFEST, "digest": d(4), "size": 528,
                 "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
                {"mediaType": DOCKER_MANIFEST, "digest": d(5), "size": 528,
                 "platform": {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1"}}
            ]
        });
        let m = parse_manifest(&bytes(&v), None).unwrap();
        assert_eq!(m.kind, ManifestKind::DockerManifestList);
        assert!(m.kind.is_index());
        assert_eq!(m.required_manifests().count(), 2);
        assert_eq!(m.required_blobs().count(), 0);
        let p = m.manifests[1].platform.as_ref().unwrap();
        assert_eq!(p.os_version.as_deref(), Some("10.0.17763.1"));
        assert_eq!(
            m.manifests[0].platform.as_ref().unwrap().variant.as_deref(),
            Some("v8")
        );
        let mut odd = v.clone();
        odd["manifests"][0]["platform"] = json!({"architecture": "unknown"});
        let m = parse_manifest(&bytes(&odd), None).unwrap();
        assert_eq!(m.manifests[0].platform.as_ref().unwrap().os, "");
    }

    #[test]
    fn schema1_is_refused_however_it_is_announced() {
        let s1 =
            json!({"schemaVersion": 1, "name": "a/b", "tag": "t", "fsLayers": [], "history": []});
        assert_eq!(
            parse_manifest(&bytes(&s1), None),
            Err(ManifestError::Schema1)
        );
        assert_eq!(
            parse_manifest(&bytes(&s1), Some(DOCKER_SCHEMA1_SIGNED)),
            Err(ManifestError::Schema1)
        );
        let mut typed = s1.clone();
        typed["mediaType"] = json!(DOCKER_SCHEMA1);
        assert_eq!(
            parse_manifest(&bytes(&typed), None),
            Err(ManifestError::Schema1)
        );
        assert_eq!(ManifestError::Schema1.code(), ErrorCode::ManifestInvalid);
    }

    #[test]
    fn artifacts_and_referrers() {
        let sig = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {"mediaType": OCI_EMPTY, "digest": Digest::sha256(b"{}"), "size": 2},
            "layers": [{"mediaType": "application/vnd.example.sig.v1", "digest": d(6), "size": 10}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d(7), "size": 400},
            "annotations": {"k": "v"}
        });
        let m = parse_manifest(&bytes(&sig), None).unwrap();
        assert!(m.is_artifact());
        assert_eq!(m.subject.as_ref().unwrap().digest, d(7));
        assert_eq!(
            m.effective_artifact_type(),
            Some("application/vnd.example.sig")
        );
        let entry = m.referrer_descriptor(d(8), 600);
        assert_eq!(
            entry.artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
        assert_eq!(entry.annotations.get("k").map(String::as_str), Some("v"));

        // No artifactType: the config's media type stands for it.
        let helm = json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": d(1), "size": 3},
            "layers": []
        });
        let m = parse_manifest(&bytes(&helm), None).unwrap();
        assert!(m.is_artifact());
        assert_eq!(
            m.effective_artifact_type(),
            Some("application/vnd.cncf.helm.config.v1+json")
        );
    }

    #[test]
    fn foreign_layers_with_urls_are_not_required() {
        let mut v = image(Some(DOCKER_MANIFEST));
        v["layers"][0]["mediaType"] = json!(DOCKER_FOREIGN_LAYER);
        v["layers"][0]["urls"] = json!(["https://example.com/layer"]);
        let m = parse_manifest(&bytes(&v), None).unwrap();
        let required: Vec<_> = m.required_blobs().map(|d| d.digest.clone()).collect();
        assert_eq!(required, [d(1), d(3)]);
    }

    #[test]
    fn bad_manifests_get_clear_errors() {
        let cases: Vec<(serde_json::Value, ManifestError)> = vec![
            (
                json!({"schemaVersion": 3, "config": image(None)["config"], "layers": []}),
                ManifestError::SchemaVersion,
            ),
            (
                json!({"schemaVersion": 2, "layers": []}),
                ManifestError::UnknownShape,
            ),
            (
                json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}),
                ManifestError::Missing("config"),
            ),
            (
                json!({"schemaVersion": 2, "mediaType": OCI_INDEX}),
                ManifestError::Missing("manifests"),
            ),
            (
                json!({"schemaVersion": 2, "mediaType": "text/plain"}),
                ManifestError::UnsupportedMediaType("text/plain".into()),
            ),
            (
                json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "config": image(None)["config"]}),
                ManifestError::Unexpected("config"),
            ),
            (
                json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "manifests": [], "config": image(None)["config"]}),
                ManifestError::Unexpected("manifests"),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(parse_manifest(&bytes(&v), None), Err(want), "{v}");
        }
        let descriptor_errors = [
            (
                "size",
                json!(-1),
                "layers[0]: size must be a non-negative integer, not -1",
            ),
            (
                "size",
                json!(1.5),
                "layers[0]: size must be a non-negative integer, not 1.5",
            ),
            (
                "digest",
                json!("sha256:xyz"),
                "layers[0]: invalid digest \"sha256:xyz\"",
            ),
            (
                "digest",
                json!("md5:abc"),
                "layers[0]: unsupported digest algorithm \"md5:abc\"",
            ),
            (
                "mediaType",
                json!("not a type"),
                "layers[0]: invalid mediaType \"not a type\"",
            ),
        ];
        for (field, value, message) in descriptor_errors {
            let mut v = image(None);
            v["layers"][0][field] = value;
            let err = parse_manifest(&bytes(&v), None).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        assert!(matches!(
            parse_manifest(b"{not json", None),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            parse_manifest(b"[]", None),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn manifests_over_the_limit_are_refused_before_parsing() {
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert_eq!(parse_manifest(&big, None), Err(ManifestError::TooLarge));
        assert_eq!(ManifestError::TooLarge.code(), ErrorCode::SizeInvalid);
    }

    #[test]
    fn the_referrers_index_filters_by_artifact_type() {
        let mut a = Descriptor::new(OCI_MANIFEST, d(2), 10);
        a.artifact_type = Some("application/vnd.example.sig".into());
        let mut b = Descriptor::new(OCI_MANIFEST, d(1), 11);
        b.artifact_type = Some("application/vnd.example.sbom".into());
        let (all, filtered) = ReferrersIndex::build(vec![a.clone(), b.clone(), a.clone()], None);
        assert!(!filtered);
        let mut want = vec![a.clone(), b.clone()];
        want.sort_by(|x, y| x.digest.cmp(&y.digest));
        assert_eq!(all.manifests, want);
        let (sigs, filtered) =
            ReferrersIndex::build(vec![a.clone(), b], Some("application/vnd.example.sig"));
        assert!(filtered);
        assert_eq!(sigs.manifests, [a]);
        let v: serde_json::Value = serde_json::from_slice(&sigs.to_json()).unwrap();
        assert_eq!(v["mediaType"], OCI_INDEX);
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(
            v["manifests"][0]["artifactType"],
            "application/vnd.example.sig"
        );
        // The response is itself a valid index.
        let parsed = parse_manifest(&sigs.to_json(), Some(OCI_INDEX)).unwrap();
        assert_eq!(parsed.manifests.len(), 1);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256), ct in proptest::option::of("\\PC{0,40}")) {
            let _ = parse_manifest(&body, ct.as_deref());
        }

        /// A valid manifest with one field replaced by any JSON value is parsed or refused,
        /// never a panic; and what parses still has typed, non-negative descriptors.
        #[test]
        fn mutated_manifests_parse_or_fail_cleanly(
            field in prop::sample::select(vec!["mediaType", "schemaVersion", "config", "layers", "manifests", "subject", "artifactType", "annotations"]),
            value in prop_oneof![
                Just(json!(null)), Just(json!(-1)), Just(json!(2)), Just(json!("x")), Just(json!([])),
                Just(json!({})), Just(json!([{}])), Just(json!(OCI_INDEX)), Just(json!(DOCKER_SCHEMA1)),
                Just(json!({"mediaType": "a/b", "digest": "sha256:00", "size": 1})),
            ],
        ) {
            let mut v = image(Some(OCI_MANIFEST));
            v[field] = value;
            if let Ok(m) = parse_manifest(&bytes(&v), None) {
                for d in m.required_blobs().chain(m.required_manifests()) {
                    prop_assert!(d.digest.as_str().starts_with("sha"));
                }
            }
        }
    }
}
