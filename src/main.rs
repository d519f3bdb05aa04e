//! The `missive` binary: parse the command line, run the command, exit 0 (ok), 1 (ran and
//! found problems) or 2 (error). Everything else lives in the library.

use clap::Parser;

/// jemalloc instead of glibc's malloc: request handlers, senders and SQLite's threads allocate
/// and free many short strings and letter-sized buffers, where glibc spent about a fifth of
/// the web intake's CPU (fastbin consolidation, arenas shared between threads). Measured in
/// `BENCHMARKS.md` (session 5): intake CPU a signature -10%, memory as with glibc (mimalloc was
/// as fast but held half as much again).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = missive::cli::Cli::parse();
    missive::commands::main(cli)
}
