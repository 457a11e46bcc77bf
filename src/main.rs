//! The `eoinfer` binary: parse arguments, set up logging, run, report errors with exit codes
//! (0 ok, 2 bad input or fatal error, 130 / 143 stopped by SIGINT / SIGTERM).

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = eoinfer::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("EOINFER_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    eoinfer::interrupt::install();
    if let Err(err) = eoinfer::cli::run(&cli) {
        eprintln!("eoinfer: error: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            let text = s.to_string();
            if !err.to_string().contains(&text) {
                eprintln!("  caused by: {text}");
            }
            source = s.source();
        }
        std::process::exit(err.exit_code());
    }
}
