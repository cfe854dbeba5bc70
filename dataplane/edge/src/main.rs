//! `trunkgate-edge`: parse flags, start logging, run the edge.

use std::process::ExitCode;

use clap::Parser;
use trunkgate_edge::settings::Settings;

// The call path allocates small strings per message; mimalloc's per-thread heaps suit the
// per-core workers better than glibc's arenas (measured with bench/edge_cps.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let settings = Settings::parse();
    // Logs go to stderr; stdout carries the call detail records.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if settings.log_format == "text" {
        logs.init();
    } else {
        logs.json().init();
    }
    match trunkgate_edge::edge::run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "trunkgate-edge failed");
            eprintln!("trunkgate-edge: {e}");
            ExitCode::from(1)
        }
    }
}
