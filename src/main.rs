//! The `video-server` binary: parse the configuration, start, wait for a signal, stop.

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

use video_server::config::Command;
use video_server::{App, Config};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its index in the option enum of the mimalloc v3
/// that libmimalloc-sys 0.1.49 builds (the crate exports no constant for it; the index is
/// the one `MIMALLOC_PURGE_DELAY` changes).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Its default in that build (milliseconds). Only an option reading exactly this is
/// changed: another mimalloc, or an operator's own `MIMALLOC_PURGE_DELAY`, is left alone.
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 1_000;

/// Memory freed by a thread is given back to the OS at once rather than after a second:
/// mimalloc runs a delayed purge only on that thread's next allocation, so a worker that
/// served a burst of connections and then went quiet (its connections parked) would hold
/// their freed buffers resident for good.
fn purge_freed_memory_at_once() {
    // SAFETY: reading an allocator option has no memory-safety precondition.
    let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    if delay == MI_PURGE_DELAY_DEFAULT {
        // SAFETY: as above; it runs before any other thread starts.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() -> anyhow::Result<()> {
    purge_freed_memory_at_once();
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

    match &config.command {
        Some(Command::Import { file }) => {
            let count = video_server::app::import(&config, file)
                .with_context(|| format!("cannot import {}", file.display()))?;
            tracing::info!(videos = count, file = %file.display(), "imported into the catalog");
            return Ok(());
        }
        Some(Command::Outbox { action }) => {
            let text = video_server::app::outbox(&config, *action).with_context(|| {
                format!(
                    "video-server outbox (--data-dir {})",
                    config.data_dir.display()
                )
            })?;
            print!("{text}");
            return Ok(());
        }
        Some(Command::Sign {
            cdn,
            path,
            ip,
            media_type,
            at,
        }) => {
            let url = video_server::app::sign(&config, cdn, path, *ip, media_type.as_deref(), *at)
                .context("cannot sign")?;
            println!("{url}");
            return Ok(());
        }
        None => {}
    }

    // Registered before the server starts, so a signal during start-up is not lost.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("cannot install signal handlers")?;
    let app = App::start(config).context("cannot start video-server")?;
    for signal in signals.forever() {
        if signal != SIGHUP {
            tracing::info!(signal, "shutting down");
            break;
        }
        match app.reload_signing() {
            Ok(cdns) => tracing::info!(?cdns, "SIGHUP: reloaded the CDN and API key files"),
            Err(error) => tracing::error!(
                %error,
                "SIGHUP: the new configuration was refused; still signing with the previous one"
            ),
        }
    }
    let summary = app.shutdown();
    tracing::info!(?summary, "stopped");
    if summary.views_failed_total > 0 {
        // Whoever stopped us (an orchestrator, a script) learns that views were lost.
        anyhow::bail!(
            "{} views could not be written and are lost",
            summary.views_failed_total
        );
    }
    Ok(())
}
