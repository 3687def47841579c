//! `regfs serve --config FILE`: server options from a TOML file. Each key is a long option of
//! `regfs serve` without its dashes (`listen`, `s3-part-size`, `no-signup`, ...); a flag or a
//! `REGFS_*` variable given for the same option wins over the file. Unknown keys are refused
//! with the file, line and key named, so a typo never silently leaves a default in place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::cli::ServeArgs;

/// A config file larger than this is refused: it is a handful of lines.
const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// The file's contents: every server option, each optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeFile {
    pub listen: Option<SocketAddr>,
    pub storage: Option<String>,
    pub memory: Option<bool>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_part_size: Option<usize>,
    pub s3_part_concurrency: Option<usize>,
    pub redirect_layers: Option<bool>,
    pub admin_user: Option<String>,
    pub admin_password: Option<String>,
    pub token_secret: Option<String>,
    pub token_ttl: Option<u64>,
    pub no_signup: Option<bool>,
    pub max_layer_size: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_uploads: Option<usize>,
    pub body_timeout: Option<u64>,
    /// Log level as the count of `-v` (0 info, 1 debug, 2 trace).
    pub verbose: Option<u8>,
}

impl ServeFile {
    /// Whether the file holds a password or the token secret.
    pub fn has_secrets(&self) -> bool {
        self.admin_password.is_some() || self.token_secret.is_some()
    }
}

/// Parses the text of a config file; errors read `FILE:LINE:COLUMN: message`.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<ServeFile> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end();
        match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                anyhow::anyhow!("{}:{line}:{column}: {message}", path.display())
            }
            None => anyhow::anyhow!("{}: {message}", path.display()),
        }
    })
}

/// Reads and parses a config file. The second value is a warning to log, if the file holds
/// secrets that every user of the machine can read.
pub fn load(path: &Path) -> anyhow::Result<(ServeFile, Option<String>)> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open config file {}", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("config file {} is not a file", path.display());
    }
    let mut text = String::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read config file {} as UTF-8", path.display()))?;
    if text.len() as u64 > MAX_FILE_SIZE {
        bail!("config file {} is larger than 1 MiB", path.display());
    }
    let parsed = parse(path, &text)?;
    let warning = (parsed.has_secrets() && meta.permissions().mode() & 0o004 != 0).then(|| {
        format!(
            "config file {} holds secrets and is readable by every user; chmod 600 it",
            path.display()
        )
    });
    Ok((parsed, warning))
}

/// Sets in `args` each option the file holds, unless `explicit(id)` says the command line or
/// the environment gave it (`id` is the field name). Relative paths in the file are taken
/// from the file's directory, so the file means the same wherever the server starts.
pub fn apply(
    args: &mut ServeArgs,
    file: ServeFile,
    dir: &Path,
    explicit: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    if file.storage.is_some() && file.memory == Some(true) {
        bail!("the config file sets both storage and memory; keep one");
    }
    let relative = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
    let storage = file.storage.map(|s| {
        if s.starts_with("s3://") {
            s
        } else {
            relative(PathBuf::from(s)).to_string_lossy().into_owned()
        }
    });
    // A storage or memory choice on the command line replaces the file's choice of either.
    let store_explicit = explicit("storage") || explicit("memory");
    macro_rules! take {
        ($field:ident, $value:expr) => {
            if let Some(v) = $value {
                if !explicit(stringify!($field)) {
                    args.$field = v;
                }
            }
        };
    }
    macro_rules! take_some {
        ($field:ident, $value:expr) => {
            if let Some(v) = $value {
                if !explicit(stringify!($field)) {
                    args.$field = Some(v);
                }
            }
        };
    }
    if !store_explicit {
        take_some!(storage, storage);
        take!(memory, file.memory);
    }
    take!(listen, file.listen);
    take_some!(s3_endpoint, file.s3_endpoint);
    take_some!(s3_region, file.s3_region);
    take!(s3_part_size, file.s3_part_size);
    take!(s3_part_concurrency, file.s3_part_concurrency);
    take!(redirect_layers, file.redirect_layers);
    take_some!(admin_user, file.admin_user);
    take_some!(admin_password, file.admin_password);
    take_some!(token_secret, file.token_secret);
    take!(token_ttl, file.token_ttl);
    take!(no_signup, file.no_signup);
    take!(max_layer_size, file.max_layer_size);
    take_some!(tls_cert, file.tls_cert.map(relative));
    take_some!(tls_key, file.tls_key.map(relative));
    take!(max_uploads, file.max_uploads);
    take!(body_timeout, file.body_timeout);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> anyhow::Result<ServeFile> {
        parse(Path::new("regfs.toml"), text)
    }

    #[test]
    fn every_option_parses() {
        let file = parse_text(
            r#"
listen = "0.0.0.0:5000"
storage = "/var/lib/regfs"
s3-endpoint = "http://s3:7480"
s3-region = "eu"
s3-part-size = 16777216
s3-part-concurrency = 8
redirect-layers = false
memory = false
admin-user = "admin"
admin-password = "secret"
token-secret = "0123456789abcdef"
token-ttl = 60
no-signup = true
max-layer-size = 1000
tls-cert = "cert.pem"
tls-key = "key.pem"
max-uploads = 3
body-timeout = 5
verbose = 1
"#,
        )
        .unwrap();
        assert_eq!(file.listen, Some("0.0.0.0:5000".parse().unwrap()));
        assert_eq!(file.no_signup, Some(true));
        assert_eq!(file.verbose, Some(1));
        assert!(file.has_secrets());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_line_and_key() {
        let err = parse_text("listen = \"127.0.0.1:0\"\nlistn = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("regfs.toml:2:1: "), "{err}");
        assert!(err.contains("unknown field `listn`"), "{err}");
        let err = parse_text("\n\nmax-uploads = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("regfs.toml:3:"), "{err}");
        let err = parse_text("listen = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("regfs.toml:1:"), "{err}");
        let err = parse_text("a = [\n").unwrap_err().to_string();
        assert!(err.starts_with("regfs.toml:"), "{err}");
    }
}
