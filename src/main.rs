//! The `regfs` binary: parse, set up logging, run, and turn any error into one message and exit
//! code 2.

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `regfs SOURCE MOUNTPOINT -o ...`, as mount.fuse3 runs it: the same as `regfs mount`.
    let commands: Vec<String> = regfs::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .chain(["help".to_string()])
        .collect();
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    if regfs::mount_helper::is_helper_form(argv.get(1..).unwrap_or_default(), &commands) {
        match regfs::mount_helper::to_mount_args(&argv[1..]) {
            Ok(args) => argv = argv[..1].iter().cloned().chain(args).collect(),
            Err(e) => {
                eprintln!("regfs: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let matches = regfs::cli::Cli::command().get_matches_from(&argv);
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
    let result = run(cli, &argv[1..]);
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

fn run(cli: regfs::cli::Cli, argv: &[std::ffi::OsString]) -> anyhow::Result<()> {
    if let regfs::cli::Command::Mount(args) = &cli.command {
        if args.daemon {
            // Before any runtime exists: the daemon is a fresh process.
            return regfs::cli::daemonize(args, argv);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(regfs::cli::run(cli))
}
