//! `tidal serve`: open the data directory through the facade ([`Tidal::open`]: recovery,
//! dataflow, serving state), then serve the HTTP API over it until a signal to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tidal_core::config::Config;
use tidal_core::time::ClockMode;
use tidal_serving::http::{AppState, app};
use tidal_serving::{Error, Tidal};

/// Overrides from the command line.
#[derive(Debug, Default, Clone)]
pub struct ServeOptions {
    /// A TOML configuration file.
    pub config: Option<PathBuf>,
    /// `engine.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `server.listen`.
    pub listen: Option<String>,
    /// `engine.workers`.
    pub workers: Option<usize>,
    /// `engine.clock`.
    pub clock: Option<ClockMode>,
}

/// Loads the configuration and applies the command-line overrides and `TIDAL_AUTH_TOKEN`.
pub fn load_config(opts: &ServeOptions) -> Result<Config, Error> {
    let mut config = match &opts.config {
        Some(p) => Config::load(p)?,
        None => Config::default_filled(),
    };
    if let Some(d) = &opts.data_dir {
        config.engine.data_dir = d.display().to_string();
    }
    if let Some(l) = &opts.listen {
        config.server.listen = l.clone();
    }
    if let Some(w) = opts.workers {
        config.engine.workers = w;
    }
    if let Some(c) = opts.clock {
        config.engine.clock = c;
    }
    if let Ok(t) = std::env::var("TIDAL_AUTH_TOKEN")
        && !t.is_empty()
    {
        config.server.auth_token = Some(t);
    }
    if config.server.auth_token.as_deref() == Some("") {
        config.server.auth_token = None;
    }
    config.validate()?;
    Ok(config)
}

/// Refuses a non-loopback address without a token (SPEC §9).
pub fn check_listen(config: &Config) -> Result<SocketAddr, Error> {
    let addr: SocketAddr = config.server.listen.parse().map_err(|_| Error::Listen {
        addr: config.server.listen.clone(),
        reason: "not an address like 127.0.0.1:7700".into(),
    })?;
    if !addr.ip().is_loopback() && config.server.auth_token.is_none() {
        return Err(Error::InsecureListen { addr: addr.to_string() });
    }
    Ok(addr)
}

/// Runs the server until SIGINT/SIGTERM, then shuts the engine down cleanly.
pub fn serve(opts: ServeOptions) -> Result<(), Error> {
    let config = load_config(&opts)?;
    let addr = check_listen(&config)?;
    let data_dir = config.engine.data_dir.clone();
    let tidal = Arc::new(Tidal::open(config)?);
    let io = |reason: std::io::Error| Error::Listen {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let state = AppState::new(tidal.clone()).map_err(io)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidal-http")
        .build()
        .map_err(io)?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(io)?;
        let local = listener.local_addr().map_err(io)?;
        tracing::info!(%local, "tidal is serving");
        println!("tidal serving on http://{local} (data in {data_dir})");
        axum::serve(listener, app(state))
            .with_graceful_shutdown(stop_signal())
            .await
            .map_err(io)
    });
    drop(rt);
    tidal.shutdown()?;
    result
}

async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
