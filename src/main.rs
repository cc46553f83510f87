//! The `cordon` binary: parses flags and hands over to the library.

use clap::Parser;

// mimalloc: cordon's hot paths (Cedar decisions, JSON records) are allocation-heavy; it cuts the
// median decision time by about a fifth against glibc malloc (BENCHMARKS.md). Its v2 line, not
// v3: v3 holds freed memory for a second before returning it (`purge_delay` 1,000 ms against
// v2's 10 ms), which under sustained ingest kept ~40 MiB more resident at a million records
// (the `million` load bench: peak 249 MiB with v3, 184 MiB with v2) for ~8 % less CPU per alert.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = cordon::cli::Cli::parse();
    std::process::exit(cordon::cli::run(cli));
}
