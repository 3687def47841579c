//! The command line: clap types, turned into validated configs before anything runs, so the
//! server and filesystem code never see clap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::names::Username;
use crate::server::ServeConfig;
use crate::storage::StorageConfig;

/// A Docker Registry v1 server, and a registry you can mount as a directory.
#[derive(Debug, Parser)]
#[command(name = "regfs", version, about)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry server (Docker Registry v1 + Docker Hub v1 API).
    Serve(ServeArgs),
}

/// Options of `regfs serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port. The first line on stdout is the URL.
    #[arg(long, default_value = "127.0.0.1:5000", env = "REGFS_LISTEN")]
    pub listen: SocketAddr,
    /// Directory to keep data in (created if missing) [default: the user's data directory].
    #[arg(long, env = "REGFS_STORAGE", conflicts_with = "memory")]
    pub storage: Option<PathBuf>,
    /// Keep everything in memory: fast, gone when the server stops. For tests and CI.
    #[arg(long)]
    pub memory: bool,
    /// Name of the administrator account (may write library/* and every namespace).
    #[arg(long, env = "REGFS_ADMIN_USER", requires = "admin_password")]
    pub admin_user: Option<String>,
    /// Password of the administrator account.
    #[arg(long, env = "REGFS_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Secret that signs tokens; share it between instances on one store. Random if unset.
    #[arg(long, env = "REGFS_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Lifetime of issued tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// Refuse new account registrations (POST /v1/users answers 403).
    #[arg(long)]
    pub no_signup: bool,
    /// Largest layer accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024 * 1024)]
    pub max_layer_size: u64,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "REGFS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "REGFS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The default storage directory: `$XDG_DATA_HOME/regfs` or `~/.local/share/regfs`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("regfs");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/regfs"),
        None => PathBuf::from("regfs-data"),
    }
}

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = anyhow::Error;

    fn try_from(args: ServeArgs) -> anyhow::Result<Self> {
        let storage = if args.memory {
            StorageConfig::Memory
        } else {
            StorageConfig::Local(args.storage.unwrap_or_else(default_data_dir))
        };
        let admin = match (args.admin_user, args.admin_password) {
            (Some(user), Some(password)) => {
                let user: Username = user
                    .parse()
                    .with_context(|| format!("--admin-user {user:?}"))?;
                if password.len() < 5 {
                    bail!("--admin-password must be at least 5 characters");
                }
                Some((user, password))
            }
            (None, Some(_)) => bail!("--admin-password needs --admin-user"),
            _ => None,
        };
        if matches!(&args.token_secret, Some(s) if s.len() < 16) {
            bail!("--token-secret must be at least 16 characters");
        }
        Ok(ServeConfig {
            listen: args.listen,
            storage,
            admin,
            token_secret: args.token_secret.map(String::into_bytes),
            token_ttl: Duration::from_secs(args.token_ttl.max(1)),
            signup: !args.no_signup,
            max_layer_size: args.max_layer_size,
            tls: args.tls_cert.zip(args.tls_key),
        })
    }
}

/// Runs the parsed command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args.try_into()?).await,
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let server = crate::server::bind(&config).await?;
    announce(&server.url())?;
    tracing::info!(url = %server.url(), storage = ?config.storage, "serving");
    server.serve(crate::server::shutdown_signal()).await;
    Ok(())
}

/// Writes the URL as the first line of stdout, for scripts that start the server.
fn announce(url: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{url}")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_args_validate() {
        let cli = Cli::try_parse_from(["regfs", "serve", "--memory", "--admin-user", "Bad!"]);
        assert!(cli.is_err(), "admin user without password");
        let cli = Cli::try_parse_from([
            "regfs",
            "serve",
            "--memory",
            "--admin-user",
            "Bad!",
            "--admin-password",
            "secret",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command;
        assert!(ServeConfig::try_from(args).is_err());
    }
}
