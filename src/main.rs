//! The `cordon` binary: parses flags and hands over to the library.

use clap::Parser;

fn main() {
    let cli = cordon::cli::Cli::parse();
    std::process::exit(cordon::cli::run(cli));
}
