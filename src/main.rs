//! The `regfs` binary: parse, set up logging, run, and turn any error into one message and exit
//! code 2.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = regfs::cli::Cli::parse();
    regfs::telemetry::init(cli.verbose);
    if let regfs::cli::Command::Mount(args) = &cli.command {
        if args.daemon {
            // Before any runtime exists: the daemon is a fresh process.
            return match regfs::cli::daemonize(&args.mountpoint) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("regfs: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("regfs: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(regfs::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("regfs: {e:#}");
            ExitCode::from(2)
        }
    }
}
