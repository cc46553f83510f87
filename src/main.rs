//! The `cordon` binary: parses flags and hands over to the library.

use clap::Parser;

// mimalloc: cordon's hot paths (Cedar decisions, JSON records) are allocation-heavy; it cuts the
// median decision time by about a fifth against glibc malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = cordon::cli::Cli::parse();
    std::process::exit(cordon::cli::run(cli));
}
