//! `switchyard`: the command line. `demo` runs a whole coordination scenario, `status` shows a
//! running deployment's state, `bench` measures throughput and latency, `sim` compares the
//! placement strategies on a workload file in a deterministic simulation (no servers), or with
//! `--live` through the real optimizer. The subcommands live in the library's `cli` module; this
//! file only sets up logging, parses, runs and turns the result into an exit code.

// A command-line tool: standard output and error are its interface.
#![allow(clippy::print_stderr)]

use std::io::Write;

use clap::Parser;
use switchyard::cli::{self, Cli};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Parsed first, so --help and --version answer whatever the logging settings say.
    let cli = Cli::parse();
    cli::logging::init("warn")?;
    let mut stdout = std::io::stdout().lock();
    cli::run(cli, &mut stdout, &|line| eprintln!("{line}")).await?;
    stdout.flush()?;
    Ok(())
}
