//! `tidal serve`: open the WAL (recovering what it holds), start the timely workers that run
//! the dataflow, wait until the recovered log is visible, then serve HTTP until a signal to stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal_core::config::Config;
use tidal_core::record::Record;
use tidal_core::time::ClockMode;
use tidal_dataflows::Engine;
use tidal_serving::http::{AppState, Inner, app};
use tidal_serving::metrics::Metrics;
use tidal_sinks::Publisher;
use tidal_sources::feed::Feed;
use tidal_sources::wal::{Wal, WalOptions};

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
pub fn load_config(opts: &ServeOptions) -> Result<Config, String> {
    let mut config = match &opts.config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
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
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Refuses a non-loopback address without a token (SPEC §9).
pub fn check_listen(config: &Config) -> Result<SocketAddr, String> {
    let addr: SocketAddr = config.server.listen.parse().map_err(|_| {
        format!(
            "server.listen {:?} is not an address like 127.0.0.1:7700",
            config.server.listen
        )
    })?;
    if !addr.ip().is_loopback() && config.server.auth_token.is_none() {
        return Err(format!(
            "refusing to listen on {addr}: it is not a loopback address and no auth token is configured. \
             Set server.auth_token in the configuration or the TIDAL_AUTH_TOKEN environment variable, \
             or listen on 127.0.0.1."
        ));
    }
    Ok(addr)
}

/// A running engine: WAL, dataflow and the serving snapshots, without HTTP.
pub struct Running {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The WAL.
    pub wal: tidal_sources::wal::WalHandle,
    /// Published snapshots.
    pub publisher: Arc<Publisher>,
    feed: Arc<Feed>,
    engine: Option<Engine>,
    /// Records recovered from the WAL at start.
    pub recovered_records: u64,
}

impl Running {
    /// Opens the data directory, recovers and starts the dataflow. Returns once every
    /// recovered record is visible to queries.
    pub fn start(config: Config) -> Result<Running, String> {
        let config = Arc::new(config);
        let data_dir = PathBuf::from(&config.engine.data_dir);
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("cannot create the data directory {}: {e}", data_dir.display()))?;
        let started = Instant::now();
        let feed = Arc::new(Feed::new(1024));
        let publisher = Arc::new(
            Publisher::with_store(config.clone(), data_dir.join("entities"))
                .map_err(|e| format!("cannot open the entity store in {}: {e}", data_dir.display()))?,
        );
        let engine = Engine::start(config.clone(), config.engine.workers, feed.clone(), publisher.clone())?;
        let mut recovered_records = 0u64;
        let mut last_config: Option<String> = None;
        let recover_feed = feed.clone();
        let wal = Wal::open(
            WalOptions::from_config(&config, wal_dir(&data_dir)),
            feed.clone(),
            |batch| {
                recovered_records += batch.records.len() as u64;
                for r in &batch.records {
                    if let Record::Config { toml } = &r.record {
                        last_config = Some(toml.clone());
                    }
                }
                recover_feed.push(Arc::new(batch));
            },
        )
        .map_err(|e| e.to_string())?;
        let target = wal.last_lsn();
        while publisher.load().lsn < target {
            std::thread::sleep(Duration::from_millis(2));
            if engine.is_finished() {
                return Err("the dataflow stopped during recovery".into());
            }
        }
        tracing::info!(
            records = recovered_records,
            lsn = target,
            seconds = started.elapsed().as_secs_f64(),
            "recovered the WAL"
        );
        let mut running = Running {
            config,
            wal,
            publisher,
            feed,
            engine: Some(engine),
            recovered_records,
        };
        // The WAL records the configuration in force, so replay can use it as its baseline.
        let toml = running.config.to_toml();
        if last_config.as_deref() != Some(toml.as_str()) {
            running.append_blocking(vec![Record::Config { toml }])?;
        }
        Ok(running)
    }

    /// Appends records and waits for durability (for startup and tools, not handlers).
    pub fn append_blocking(&mut self, records: Vec<Record>) -> Result<u64, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.wal.submit(
            records,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        match rx.recv() {
            Ok(Ok(c)) => Ok(c.last_lsn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the WAL writer stopped".into()),
        }
    }

    /// Stops writing, drains the dataflow and joins the workers.
    pub fn shutdown(mut self) {
        self.wal.shutdown();
        self.feed.close();
        if let Some(engine) = self.engine.take()
            && let Err(e) = engine.join()
        {
            tracing::error!("the dataflow stopped with an error: {e}");
        }
    }
}

/// `<data-dir>/wal`.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

/// Runs the server until SIGINT/SIGTERM.
pub fn serve(opts: ServeOptions) -> Result<(), String> {
    let config = load_config(&opts)?;
    let addr = check_listen(&config)?;
    let running = Running::start(config)?;
    let state = AppState(Arc::new(Inner {
        config: running.config.clone(),
        wal: running.wal.clone(),
        publisher: running.publisher.clone(),
        metrics: Arc::new(Metrics::new()),
        auth_token: running.config.server.auth_token.clone(),
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%local, "tidal is serving");
        println!(
            "tidal serving on http://{local} (data in {})",
            state.config.engine.data_dir
        );
        axum::serve(listener, app(state))
            .with_graceful_shutdown(stop_signal())
            .await
            .map_err(|e| format!("server error: {e}"))
    });
    running.shutdown();
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
