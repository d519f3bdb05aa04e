//! The `missive` binary: parse the command line, run the command, exit 0 (ok), 1 (ran and
//! found problems) or 2 (error). Everything else lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = missive::cli::Cli::parse();
    missive::commands::main(cli)
}
