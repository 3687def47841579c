//! The command line: clap types, turned into validated configs before anything runs, so the
//! server and filesystem code never see clap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};

use std::os::unix::process::CommandExt;

use crate::mount::{FsConfig, MountConfig};
use crate::names::Username;
use crate::server::ServeConfig;
use crate::storage::{S3Config, StorageConfig};

/// A Docker Registry v1 server, and a registry you can mount as a directory.
///
/// regfs serve runs a registry that docker, podman and skopeo push to and pull from over the
/// Docker Registry v1 and Docker Hub v1 APIs, keeping its data in a directory, in S3 or in
/// memory. regfs mount shows a registry, the embedded one or any v1 registry, as a directory
/// tree: tags are files holding image ids, images are directories of their json, layer and
/// ancestry, and writing a tag pushes.
///
/// Each command prints its URL as the first line of stdout. Errors end the command with one
/// message on stderr and exit status 2.
#[derive(Debug, Parser)]
#[command(name = "regfs", version)]
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
    ///
    /// The server listens on --listen (HTTPS with --tls-cert and --tls-key), prints its URL as
    /// the first line of stdout, and stops cleanly on SIGINT or SIGTERM: requests in flight
    /// finish, uploads cut off are never published.
    ///
    /// Every option can also come from a REGFS_* environment variable or from a TOML file
    /// given with --config; a flag wins over the variable, and both win over the file.
    Serve(ServeArgs),
    /// Mount a registry as a directory tree (the embedded one without --registry).
    ///
    /// Without --registry, regfs serves its embedded registry (the server options below) and
    /// mounts it as its administrator; with --registry, it mounts that registry as --user, or
    /// anonymously. The mount stays in the foreground until SIGINT or SIGTERM, or until
    /// `fusermount3 -u MOUNTPOINT`; --daemon detaches once mounted.
    Mount(MountArgs),
    /// Print a completion script for a shell on stdout.
    ///
    /// bash: regfs completions bash > /etc/bash_completion.d/regfs (or
    /// ~/.local/share/bash-completion/completions/regfs). zsh: write it as _regfs in a
    /// directory of $fpath. fish: regfs completions fish > ~/.config/fish/completions/regfs.fish.
    Completions(CompletionsArgs),
    /// Print a manual page in roff on stdout, or write them all to a directory.
    ///
    /// `regfs man` is regfs(1); `regfs man serve` is regfs-serve(1), one page per command as
    /// git and systemctl users know them. `regfs man --dir /usr/local/share/man/man1` writes
    /// every page there; then `man regfs-mount` works.
    Man(ManArgs),
}

/// Options of `regfs completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options of `regfs man`.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// The command whose page to print (regfs-COMMAND(1)); without it, regfs(1).
    #[arg(conflicts_with = "dir")]
    pub command: Option<String>,
    /// Write every page (regfs.1, regfs-serve.1, ...) to this directory instead.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// What `regfs mount --help` adds after the options: the tree and the name rules.
const MOUNT_AFTER_HELP: &str = "\
The tree:
  repositories/<namespace>/<repo>/tags/<tag>   file holding the image id
  repositories/<namespace>/<repo>/images/<id>  link to images/<id>
  images/<id>/{json,layer,ancestry,parent}     the image, byte for byte
  search/<term>                                lookup only: search results

`ls images` lists the images of every repository's image list (with their ancestors once
their ancestry has been read) and the images being pushed through this mount; any other
complete image can still be opened by its id.

Name rules (others are refused with ENOENT on lookup and EINVAL on create):
  namespace  4 to 30 characters of a-z, 0-9 and _ (library holds official repositories)
  repo       1 to 255 characters of a-z, 0-9, -, _ and . (not . or ..; in library, not a
             64-hex-digit id)
  tag        1 to 128 characters of A-Z, a-z, 0-9, _, . and -; the first one a letter,
             digit or _
  image id   64 lowercase hex digits

Start-up: the mountpoint must be an empty directory that is not already a mount point
(--allow-non-empty mounts anyway); the registry must answer and accept the credentials
(--no-check skips this).";

/// Options of `regfs mount`.
#[derive(Debug, Clone, Args)]
#[command(after_help = MOUNT_AFTER_HELP)]
pub struct MountArgs {
    /// Existing empty directory to mount on (not already a mount point).
    pub mountpoint: PathBuf,
    /// Registry URL, e.g. http://127.0.0.1:5000. Without it, the embedded registry is served
    /// (see the server options below) and mounted as its administrator.
    #[arg(long)]
    pub registry: Option<String>,
    /// Registry user (else REGFS_USER, else ~/.docker/config.json, else anonymous).
    #[arg(long, env = "REGFS_USER", requires = "password")]
    pub user: Option<String>,
    /// Registry password.
    #[arg(long, env = "REGFS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Refuse every write with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Seconds listings and tags are trusted before asking the registry again.
    #[arg(long, default_value_t = 1.0)]
    pub ttl: f64,
    /// Seconds a registry call may take (retries included) before the operation fails with EIO.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Memory for cached layer bytes and read-ahead, in bytes.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub cache_size: u64,
    /// Also keep layer bytes and image metadata in this directory (created 0700), across
    /// mounts; one mount uses it at a time.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Most bytes kept in --cache-dir; least recently used files go first.
    #[arg(long, default_value_t = 10 * 1024 * 1024 * 1024)]
    pub cache_dir_size: u64,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf unless root).
    #[arg(long)]
    pub allow_other: bool,
    /// Detach once mounted; the URL is still printed first.
    #[arg(long)]
    pub daemon: bool,
    /// Mount even on a directory that is not empty (its contents are hidden while mounted)
    /// or already a mount point.
    #[arg(long)]
    pub allow_non_empty: bool,
    /// Do not check at start-up that the registry answers and accepts the credentials (for
    /// mounts that must come up before the network; errors then show on first use).
    #[arg(long)]
    pub no_check: bool,
    #[command(flatten, next_help_heading = "Embedded registry (without --registry)")]
    pub server: ServeArgs,
}

/// Options of `regfs serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Read options from this TOML file: each key is a long option without its dashes
    /// (listen = "0.0.0.0:5000", no-signup = true); flags and REGFS_* variables win over it.
    #[arg(long, env = "REGFS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port. The first line on stdout is the URL.
    #[arg(long, default_value = "127.0.0.1:5000", env = "REGFS_LISTEN")]
    pub listen: SocketAddr,
    /// Where to keep data: a directory (created if missing) or s3://bucket/prefix
    /// [default: the user's data directory].
    #[arg(long, env = "REGFS_STORAGE", conflicts_with = "memory")]
    pub storage: Option<String>,
    /// S3 endpoint for self-hosted stores (else AWS_ENDPOINT_URL); requests are path-style.
    #[arg(long, env = "REGFS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (else AWS_REGION).
    #[arg(long, env = "REGFS_S3_REGION")]
    pub s3_region: Option<String>,
    /// Part size of multipart uploads to S3, in bytes.
    #[arg(long, env = "REGFS_S3_PART_SIZE", default_value_t = 8 * 1024 * 1024)]
    pub s3_part_size: usize,
    /// Parts of one upload sent to S3 at once.
    #[arg(long, env = "REGFS_S3_PART_CONCURRENCY", default_value_t = 4)]
    pub s3_part_concurrency: usize,
    /// Answer layer GETs with a redirect to a short-lived presigned URL of the S3 store, so
    /// clients download from it directly (needs s3:// storage reachable by the clients).
    #[arg(long, env = "REGFS_REDIRECT_LAYERS")]
    pub redirect_layers: bool,
    /// Keep everything in memory: fast, gone when the server stops. For tests and CI.
    #[arg(long, env = "REGFS_MEMORY")]
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
    #[arg(long, env = "REGFS_TOKEN_TTL", default_value_t = 3600)]
    pub token_ttl: u64,
    /// Refuse new account registrations (POST /v1/users answers 403).
    #[arg(long, env = "REGFS_NO_SIGNUP")]
    pub no_signup: bool,
    /// Largest layer accepted, in bytes.
    #[arg(long, env = "REGFS_MAX_LAYER_SIZE", default_value_t = 64 * 1024 * 1024 * 1024)]
    pub max_layer_size: u64,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "REGFS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "REGFS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Layer uploads in progress at once; more are answered 503 with Retry-After.
    #[arg(long, env = "REGFS_MAX_UPLOADS", default_value_t = 64)]
    pub max_uploads: usize,
    /// Seconds a request body may send nothing (or a client take no response bytes) before
    /// the request is cut off; an upload cut off is never published.
    #[arg(long, env = "REGFS_BODY_TIMEOUT", default_value_t = 60)]
    pub body_timeout: u64,
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
        let storage = match args.storage {
            _ if args.memory => StorageConfig::Memory,
            Some(url) if url.starts_with("s3://") => {
                let mut s3 = S3Config::parse(&url)
                    .with_context(|| format!("--storage {url:?}: expected s3://bucket/prefix"))?;
                s3.endpoint = args.s3_endpoint;
                s3.region = args.s3_region;
                // S3 refuses parts under 5 MiB (but the last).
                if !(5 * 1024 * 1024..=512 * 1024 * 1024).contains(&args.s3_part_size) {
                    bail!("--s3-part-size must be between 5 MiB and 512 MiB");
                }
                s3.part_size = args.s3_part_size;
                s3.part_concurrency = args.s3_part_concurrency.clamp(1, 64);
                StorageConfig::S3(s3)
            }
            Some(dir) => StorageConfig::Local(PathBuf::from(dir)),
            None => StorageConfig::Local(default_data_dir()),
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
            (Some(_), None) => bail!("--admin-user needs --admin-password"),
            (None, None) => None,
        };
        if args.tls_cert.is_some() != args.tls_key.is_some() {
            bail!("--tls-cert and --tls-key go together");
        }
        if matches!(&args.token_secret, Some(s) if s.len() < 16) {
            bail!("--token-secret must be at least 16 characters");
        }
        if args.max_uploads == 0 {
            bail!("--max-uploads must be at least 1");
        }
        if !(1..=86_400).contains(&args.body_timeout) {
            bail!("--body-timeout must be between 1 and 86400 seconds");
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
            max_uploads: args.max_uploads,
            timeouts: crate::server::listen::Timeouts {
                body: Duration::from_secs(args.body_timeout),
                ..Default::default()
            },
            redirect_layers: args.redirect_layers,
            clock: crate::server::state::Clock::system(),
        })
    }
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !v.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&v) {
        bail!("--{name} must be a number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

impl TryFrom<MountArgs> for MountConfig {
    type Error = anyhow::Error;

    fn try_from(args: MountArgs) -> anyhow::Result<Self> {
        let (uid, gid) = crate::mount::run::current_ids();
        let mut serve = ServeConfig::try_from(args.server)?;
        if args.registry.is_none() && serve.admin.is_none() {
            // The mount acts as the embedded registry's administrator; without a configured
            // one, make a password for this run only.
            let password = hex::encode(rand::random::<[u8; 16]>());
            serve.admin = Some(("admin".parse()?, password));
        }
        let credentials = match (args.user, args.password) {
            (Some(u), Some(p)) => Some((u, p)),
            _ => args.registry.as_deref().and_then(|url| {
                crate::mount::credentials::docker_config_path()
                    .and_then(|path| crate::mount::credentials::from_docker_config(&path, url))
            }),
        };
        if let Some(url) = &args.registry {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("--registry must be an http:// or https:// URL");
            }
        }
        if args.cache_size < 16 * 1024 * 1024 {
            bail!("--cache-size must be at least 16 MiB");
        }
        if args.cache_dir_size < 64 * 1024 * 1024 {
            bail!("--cache-dir-size must be at least 64 MiB");
        }
        if let Some(dir) = &args.cache_dir {
            if dir.exists() && !dir.is_dir() {
                bail!("--cache-dir {} is not a directory", dir.display());
            }
        }
        let ttl = seconds("ttl", args.ttl)?.max(Duration::from_millis(100));
        Ok(MountConfig {
            mountpoint: args.mountpoint,
            registry: args.registry,
            serve,
            credentials,
            fs: FsConfig {
                ttl,
                cache_size: args.cache_size,
                cache_dir: args.cache_dir,
                cache_dir_size: args.cache_dir_size,
                uid,
                gid,
                read_only: args.read_only,
                ..FsConfig::default()
            },
            timeout: seconds("timeout", args.timeout)?.max(Duration::from_millis(100)),
            threads: args.threads.clamp(1, 64),
            allow_other: args.allow_other,
            readahead_kb: Some(4096),
            allow_non_empty: args.allow_non_empty,
            check_registry: !args.no_check,
        })
    }
}

/// Reads the `--config` file of `serve` (or of `mount`'s embedded server) into the parsed
/// command, for each option that `matches` shows neither on the command line nor in the
/// environment. Returns a warning to log once logging is set up, if there is one.
pub fn apply_config(cli: &mut Cli, matches: &clap::ArgMatches) -> anyhow::Result<Option<String>> {
    let (args, sub) = match &mut cli.command {
        Command::Serve(args) => (args, "serve"),
        Command::Mount(args) => (&mut args.server, "mount"),
        _ => return Ok(None),
    };
    let Some(path) = args.config.clone() else {
        return Ok(None);
    };
    let Some(sub_matches) = matches.subcommand_matches(sub) else {
        return Ok(None);
    };
    let (file, warning) = crate::config::load(&path)?;
    let explicit = |id: &str| {
        matches!(
            sub_matches.value_source(id),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        )
    };
    if let Some(v) = file.verbose {
        if cli_verbose_unset(matches) {
            cli.verbose = v;
        }
    }
    let args = match &mut cli.command {
        Command::Serve(args) => args,
        Command::Mount(args) => &mut args.server,
        _ => return Ok(None),
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    crate::config::apply(args, file, dir, &explicit)
        .with_context(|| format!("config file {}", path.display()))?;
    Ok(warning)
}

fn cli_verbose_unset(matches: &clap::ArgMatches) -> bool {
    matches.get_count("verbose") == 0
        && matches
            .subcommand()
            .is_none_or(|(_, sub)| sub.get_count("verbose") == 0)
}

/// `regfs completions SHELL`: the script on stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut Cli::command(), "regfs", &mut out);
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// `regfs man [COMMAND]`: one page per command, named `regfs-COMMAND` as git names its pages,
/// since one page holding both option lists would be too long to find anything in.
pub fn man(args: &ManArgs) -> anyhow::Result<()> {
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(root, dir)
            .with_context(|| format!("cannot write pages to {}", dir.display()))?;
        return Ok(());
    }
    let page = match &args.command {
        None => root,
        Some(name) => root.find_subcommand(name).cloned().with_context(|| {
            let names: Vec<_> = root.get_subcommands().map(|c| c.get_name()).collect();
            format!("no command {name:?}; commands: {}", names.join(", "))
        })?,
    };
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(page).render(&mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// Runs the parsed command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Completions(args) => completions(&args),
        Command::Man(args) => man(&args),
        Command::Serve(args) => serve(args.try_into()?).await,
        Command::Mount(args) => {
            let config: MountConfig = args.try_into()?;
            crate::mount::run(config, |url| {
                let _ = announce(url);
            })
            .await?;
            Ok(())
        }
    }
}

/// `regfs mount --daemon`: checks the mountpoint and the registry here, where the user sees
/// the answer, then runs the same command without `--daemon` as a detached child, passes on
/// the URL it prints, and returns once the mount is in place (or the child failed).
///
/// `argv` is the command line as parsed (without the program name), from which the child's
/// is made.
pub fn daemonize(args: &MountArgs, argv: &[std::ffi::OsString]) -> anyhow::Result<()> {
    use std::io::BufRead;
    let mountpoint = args.mountpoint.as_path();
    let config = MountConfig::try_from(args.clone())?;
    crate::mount::run::check_mountpoint(&config.mountpoint, config.allow_non_empty)?;
    if let (Some(url), true) = (&config.registry, config.check_registry) {
        let client = crate::client::RegistryClient::new(crate::client::ClientConfig {
            url: url.clone(),
            credentials: config.credentials.clone(),
            timeout: config.timeout,
        })?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(crate::mount::run::check_registry(&client))?;
    }
    let exe = std::env::current_exe().context("cannot find the regfs executable")?;
    let args: Vec<&std::ffi::OsString> = argv.iter().filter(|a| *a != "--daemon").collect();
    let mut child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        // Its own process group: a Ctrl-C in this terminal is not meant for the daemon.
        .process_group(0)
        .spawn()
        .context("cannot start the daemon")?;
    let stdout = child.stdout.take().context("daemon has no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    if line.is_empty() {
        let status = child.wait()?;
        bail!("the daemon exited before mounting ({status})");
    }
    announce(line.trim())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let target = std::fs::canonicalize(mountpoint)?;
    while std::time::Instant::now() < deadline {
        if is_mounted(&target) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the daemon exited before mounting ({status})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the mount did not appear within 60 s")
}

/// Whether a FUSE mount of ours sits at `path` (from /proc/self/mountinfo, whose escapes of
/// spaces, tabs, newlines and backslashes in paths are decoded).
pub fn is_mounted(path: &std::path::Path) -> bool {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    info.split(|&b| b == b'\n').any(|line| {
        let ours = line.windows(5).any(|w| w == b"regfs");
        ours && line.split(|&b| b == b' ').nth(4).is_some_and(|field| {
            crate::mount::run::unescape_mountinfo(field)
                == std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())
        })
    })
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let signal = crate::server::ShutdownSignal::install()?;
    let server = crate::server::bind(&config).await?;
    announce(&server.url())?;
    tracing::info!(url = %server.url(), storage = ?config.storage, "serving");
    server.serve(signal.recv()).await;
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

    #[test]
    fn mount_args_validate() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args.iter().copied()).unwrap();
            let Command::Mount(m) = cli.command else {
                panic!("parsed as mount");
            };
            MountConfig::try_from(m)
        };
        let ok = parse(&[
            "regfs",
            "mount",
            "/mnt",
            "--registry",
            "http://r:5000",
            "--memory",
        ])
        .unwrap();
        assert_eq!(ok.registry.as_deref(), Some("http://r:5000"));
        assert!(parse(&["regfs", "mount", "/mnt", "--registry", "r:5000"]).is_err());
        assert!(parse(&["regfs", "mount", "/mnt", "--ttl=-1"]).is_err());
        assert!(parse(&["regfs", "mount", "/mnt", "--cache-size", "1000"]).is_err());
        let cached = parse(&["regfs", "mount", "/mnt", "--cache-dir", "/var/cache/regfs"]).unwrap();
        assert_eq!(
            cached.fs.cache_dir.as_deref(),
            Some(std::path::Path::new("/var/cache/regfs"))
        );
        assert!(parse(&["regfs", "mount", "/mnt", "--cache-dir-size", "1000"]).is_err());
        let embedded = parse(&["regfs", "mount", "/mnt", "--memory"]).unwrap();
        assert!(
            embedded.serve.admin.is_some(),
            "the embedded registry always has an admin"
        );
    }

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
        let Command::Serve(args) = cli.command else {
            panic!("parsed as serve");
        };
        assert!(ServeConfig::try_from(args).is_err());
        for bad in [
            ["--max-uploads", "0"],
            ["--body-timeout", "0"],
            ["--body-timeout", "100000"],
        ] {
            let cli = Cli::try_parse_from(["regfs", "serve", "--memory", bad[0], bad[1]]).unwrap();
            let Command::Serve(args) = cli.command else {
                panic!("parsed as serve");
            };
            assert!(ServeConfig::try_from(args).is_err(), "{bad:?}");
        }
    }
}
