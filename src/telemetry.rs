//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` or the `-v` count.
//!
//! Stdout stays free for what scripts read (the server's URL on its first line).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `verbosity` 0 = info, 1 = debug, 2+ = trace for regfs.
/// A second call (tests) is a no-op.
pub fn init(verbosity: u8) {
    let default = match verbosity {
        0 => "regfs=info,warn,fuser=error",
        1 => "regfs=debug,info,fuser=warn",
        _ => "regfs=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
