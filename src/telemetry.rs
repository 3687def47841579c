//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` or the `-v` count.
//!
//! Stdout stays free for what scripts read (the server's URL on its first line). Lines go to
//! stderr from a thread of their own: a slow stderr (a file whose pages were evicted, a pipe
//! read slowly) must not stall the request or FUSE reply that logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Keeps the logging thread; dropping it writes out what is queued.
pub struct LogGuard {
    _worker: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global subscriber; `verbosity` 0 = info, 1 = debug, 2+ = trace for regfs.
/// A second call (tests) is a no-op.
pub fn init(verbosity: u8) -> LogGuard {
    let default = match verbosity {
        0 => "regfs=info,warn,fuser=error",
        1 => "regfs=debug,info,fuser=warn",
        _ => "regfs=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Not lossy: every line is kept, and a logger blocks only once this many lines wait.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        .finish(std::io::stderr());
    // Colours only for a person at a terminal: a log file or a CI capture gets plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        .try_init()
        .is_ok();
    LogGuard {
        _worker: installed.then_some(guard),
    }
}
