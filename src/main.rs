//! The `regfs` binary: parse, set up logging, run, and turn any error into one message and exit
//! code 2.

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let matches = regfs::cli::Cli::command().get_matches();
    let mut cli = match regfs::cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The config file before logging: it may set the log level.
    let warning = match regfs::cli::apply_config(&mut cli, &matches) {
        Ok(warning) => warning,
        Err(e) => {
            eprintln!("regfs: {e:#}");
            return ExitCode::from(2);
        }
    };
    let log = regfs::telemetry::init(cli.verbose);
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let result = run(cli);
    // Queued log lines first, so the error is the last thing printed.
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("regfs: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: regfs::cli::Cli) -> anyhow::Result<()> {
    if let regfs::cli::Command::Mount(args) = &cli.command {
        if args.daemon {
            // Before any runtime exists: the daemon is a fresh process.
            return regfs::cli::daemonize(args);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(regfs::cli::run(cli))
}
