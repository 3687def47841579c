//! Where the mount's registry credentials come from: flags, then `REGFS_USER`/`REGFS_PASSWORD`
//! (both handled by clap), then the `auths` entry `docker login` wrote in
//! `~/.docker/config.json` for the registry's host.

use std::path::Path;

use base64::Engine;

/// The `user:password` stored for `registry_url`'s host in a Docker config file, if any.
pub fn from_docker_config(config: &Path, registry_url: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(config).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = value.get("auths")?.as_object()?;
    let want = host_port(registry_url)?;
    let entry = auths
        .iter()
        .find(|(key, _)| host_port(key).as_deref() == Some(want.as_str()))?
        .1;
    let auth = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The default Docker config: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn docker_config_path() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(std::path::PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(std::path::PathBuf::from(home).join(".docker/config.json"))
}

/// `host[:port]` of a URL or of a bare `auths` key such as `https://host:5000/v1/`.
fn host_port(s: &str) -> Option<String> {
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let host = rest.split('/').next()?.trim();
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_entry_for_the_registry_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"https://other:1/v1/": {{"auth": "eDp5"}}, "http://reg.local:5000/v1/": {{"auth": "{auth}"}}}}}}"#
            ),
        )
        .unwrap();
        assert_eq!(
            from_docker_config(&path, "http://REG.local:5000"),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(from_docker_config(&path, "http://reg.local:6000"), None);
        assert_eq!(
            from_docker_config(&dir.path().join("missing"), "http://x"),
            None
        );
    }
}
