//! The JSON shapes and header names of the v1 protocol, shared by the server and the mount's
//! client so the two halves cannot drift apart.

use serde::{Deserialize, Serialize};

pub const HEADER_TOKEN: &str = "x-docker-token";
pub const HEADER_ENDPOINTS: &str = "x-docker-endpoints";
pub const HEADER_SIZE: &str = "x-docker-size";
pub const HEADER_CHECKSUM: &str = "x-docker-checksum";
pub const HEADER_CHECKSUM_PAYLOAD: &str = "x-docker-checksum-payload";
pub const HEADER_STANDALONE: &str = "x-docker-registry-standalone";
pub const HEADER_REGISTRY_VERSION: &str = "x-docker-registry-version";

/// One entry of a repository's image list (`GET/PUT /v1/repositories/<ns>/<repo>/images`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// A search hit: `name` is always `namespace/repo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResult {
    pub name: String,
    pub description: String,
}

/// The body of `GET /v1/search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResponse {
    pub query: String,
    pub num_results: usize,
    pub results: Vec<SearchResult>,
}

/// The media type a client names in `Accept` to have each tag's last update listed with it:
/// `{"<tag>": {"id": "<image id>", "last_update": <unix>}}`. A registry that does not know it
/// sends the plain `{"<tag>": "<image id>"}` map, told apart by its Content-Type, so a client
/// can ask any registry.
pub const TAGS_WITH_TIMES: &str = "application/vnd.regfs.tags.v1+json";

/// One entry of a [`TAGS_WITH_TIMES`] listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedTag {
    pub id: String,
    #[serde(default)]
    pub last_update: Option<i64>,
}

/// Tag metadata (`GET .../tags/<tag>/json`), parsed from the pusher's User-Agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagInfo {
    pub last_update: Option<i64>,
    pub docker_version: Option<String>,
    pub docker_go_version: Option<String>,
    pub arch: Option<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
}

impl TagInfo {
    /// Reads `docker/1.3.2 go/go1.3.3 kernel/3.16 os/linux arch/amd64` style User-Agents;
    /// anything else leaves the fields empty.
    pub fn from_user_agent(user_agent: &str, now: i64) -> Self {
        let mut info = TagInfo {
            last_update: Some(now),
            ..Default::default()
        };
        for part in user_agent.split_whitespace() {
            let Some((k, v)) = part.split_once('/') else {
                continue;
            };
            let v = Some(v.chars().take(128).collect::<String>());
            match k {
                "docker" => info.docker_version = v,
                "go" => info.docker_go_version = v,
                "arch" => info.arch = v,
                "os" => info.os = v,
                "kernel" => info.kernel = v,
                _ => {}
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_info_reads_docker_user_agents() {
        let ua = "docker/1.3.2 go/go1.3.3 git-commit/39fa2fa kernel/3.16.0 os/linux arch/amd64";
        let info = TagInfo::from_user_agent(ua, 7);
        assert_eq!(info.last_update, Some(7));
        assert_eq!(info.docker_version.as_deref(), Some("1.3.2"));
        assert_eq!(info.arch.as_deref(), Some("amd64"));
        let other = TagInfo::from_user_agent("curl/8.0", 1);
        assert_eq!(other.os, None);
    }
}
