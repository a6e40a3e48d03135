//! The `video-server` binary: parse the configuration, start, wait for a signal, stop.

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

use video_server::config::Command;
use video_server::{App, Config};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // The runtime logs every socket it registers at info; keep it to warnings unless the
    // operator's own directives say otherwise (later directives win).
    let filter = EnvFilter::try_new(format!("may=warn,scylla=error,{}", config.log_level))
        .with_context(|| format!("invalid --log-level {:?}", config.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    if let Some(Command::Import { file }) = &config.command {
        let count = video_server::app::import(&config, file)
            .with_context(|| format!("cannot import {}", file.display()))?;
        tracing::info!(videos = count, file = %file.display(), "imported into the catalog");
        return Ok(());
    }

    // Registered before the server starts, so a signal during start-up is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let app = App::start(config).context("cannot start video-server")?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    let summary = app.shutdown();
    tracing::info!(?summary, "stopped");
    Ok(())
}
