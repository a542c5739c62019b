//! `tidal serve`: open the data directory through the facade ([`Tidal::open`]: recovery,
//! dataflow, serving state), then serve the HTTP API over it until a signal to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tidal_core::config::{ClusterConfig, Config, ServerConfig};
use tidal_core::time::ClockMode;
use tidal_serving::http::listen::Limits;
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
    /// Processes in the cluster (checked against the host file).
    pub processes: Option<usize>,
    /// `cluster.process_id`.
    pub process_id: Option<usize>,
    /// The cluster's host file: `cluster.processes`.
    pub hostfile: Option<PathBuf>,
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
    if let Some(path) = &opts.hostfile {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let process_id = opts.process_id.unwrap_or(config.cluster.process_id);
        config.cluster = ClusterConfig::parse_hostfile(&text, process_id)?;
        if let Some(n) = opts.processes
            && n != config.cluster.processes.len()
        {
            return Err(Error::Config(tidal_core::Error::Config {
                field: "--processes".into(),
                message: format!(
                    "is {n} but the host file {} lists {} processes",
                    path.display(),
                    config.cluster.processes.len()
                ),
            }));
        }
    }
    // A cluster process given no address of its own listens where the others look for it:
    // its HTTP address in the cluster's list, when that is an IP address and port.
    if opts.listen.is_none()
        && config.server.listen == ServerConfig::default().listen
        && let Some(own) = config.cluster.processes.get(config.cluster.process_id)
        && own.http.parse::<SocketAddr>().is_ok()
    {
        config.server.listen = own.http.clone();
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
    let mut config = load_config(&opts)?;
    let addr = check_listen(&config)?;
    if let Some(own) = config.cluster.processes.get(config.cluster.process_id)
        && !config.cluster.is_single()
        && !own.http.is_empty()
        && own.http.rsplit(':').next() != Some(addr.port().to_string().as_str())
    {
        tracing::warn!(
            listen = %addr,
            http = %own.http,
            "this process listens on port {} but the cluster's list gives process {} the HTTP address {}: the \
             other processes will look for it there (pass --listen with that port, unless a proxy forwards it)",
            addr.port(),
            config.cluster.process_id,
            own.http
        );
    }
    let data_dir = config.engine.data_dir.clone();
    let io = |reason: std::io::Error| Error::Listen {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidal-http")
        .build()
        .map_err(io)?;
    // The listener is bound before the engine starts: while it recovers (and, in a cluster,
    // waits for the other processes) every request is answered 503 saying so.
    let bound = std::net::TcpListener::bind(addr).map_err(io)?;
    bound.set_nonblocking(true).map_err(io)?;
    let starting = {
        let _in_rt = rt.enter();
        let listener = tokio::net::TcpListener::from_std(bound.try_clone().map_err(io)?).map_err(io)?;
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tidal_serving::http::listen::serve(
            listener,
            tidal_serving::http::starting(starting_why(&config)),
            Limits::of(&config.server),
            async move {
                let _ = started_rx.await;
            },
        );
        (rt.spawn(server), started_tx)
    };
    let local = bound.local_addr().map_err(io)?;
    tracing::info!(%local, "tidal is starting: requests are answered 503 until it serves");
    // The address bound (a port 0 given is a real one now): what a cluster process tells
    // the others when the host file leaves its HTTP address out.
    if !config.cluster.is_single() {
        config.server.listen = local.to_string();
    }
    let opened = Tidal::open(config);
    // The engine is up (or will not be): the answers that said so stop, and the real ones
    // begin on the same socket (connections made in between wait in its backlog).
    let (task, started) = starting;
    let _ = started.send(());
    let abort = task.abort_handle();
    let ended = rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(2), task).await });
    if ended.is_err() {
        // A connection still open after its last answer is closed with the rest.
        abort.abort();
    }
    let tidal = Arc::new(opened?);
    let state = AppState::new(tidal.clone()).map_err(io)?;
    let limits = Limits::of(&tidal.config().server);
    if tidal.peers().is_some() && tidal.config().engine.clock == ClockMode::Event {
        // What each process recovered becomes visible once every process has told the
        // others of its last batch (the others answer 503 until they serve: ask again).
        let announcing = Arc::downgrade(&tidal);
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while let Some(Err(e)) = announcing.upgrade().map(|t| t.announce_last_batch()) {
                if std::time::Instant::now() >= deadline {
                    tracing::warn!(error = %e, "could not tell the other processes of the recovered log");
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
    }
    let watch = tidal.clone();
    if watch.peers().is_some() {
        quiet_cluster_panics();
    }
    let result: Result<Option<String>, Error> = rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(bound).map_err(io)?;
        let local = listener.local_addr().map_err(io)?;
        tracing::info!(%local, "tidal is serving");
        println!("tidal serving on http://{local} (data in {data_dir})");
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<String>();
        if watch.peers().is_some() {
            // A cluster's dataflow stops when a process leaves it: this process cannot go on
            // alone, so it stops serving and starts afresh (below), recovering its WAL and
            // waiting for the cluster to form again.
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    if let Err(Error::DataflowStopped(why)) = watch.health() {
                        let _ = lost_tx.send(why);
                        return;
                    }
                }
            });
        }
        let lost = std::sync::Arc::new(std::sync::Mutex::new(None));
        let lost_in = lost.clone();
        let stop = async move {
            tokio::select! {
                _ = stop_signal() => {},
                Ok(why) = lost_rx => {
                    tracing::error!(reason = %why, "the cluster's dataflow stopped (a process left); restarting to rejoin it");
                    *lost_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                },
            }
        };
        tidal_serving::http::listen::serve(listener, app(state), limits, stop)
            .await
            .map_err(io)?;
        Ok(lost.lock().unwrap_or_else(|p| p.into_inner()).take())
    });
    drop(rt);
    let shut = tidal.shutdown();
    if shut.is_ok() && matches!(result, Ok(None)) {
        // The process exits next and everything durable is written (the WAL synced, the
        // shutdown checkpoint and the entity store closed): freeing the serving state piece
        // by piece would take seconds (5.4 s at 1M items and 1M users) for nothing.
        std::mem::forget(tidal);
    } else {
        drop(tidal);
    }
    match result? {
        None => shut,
        Some(why) => {
            if let Err(e) = shut {
                tracing::warn!(error = %e, "the engine stopped with an error after the cluster broke up");
            }
            rejoin(why)
        }
    }
}

/// What a request is told while the engine starts.
fn starting_why(config: &Config) -> String {
    let dir = &config.engine.data_dir;
    if config.cluster.is_single() {
        return format!("tidal is starting: loading its checkpoint and replaying its WAL in {dir}");
    }
    let others: Vec<String> = (config.cluster.processes.iter().enumerate())
        .filter(|(i, _)| *i != config.cluster.process_id)
        .map(|(i, p)| format!("process {i} at {}", p.timely))
        .collect();
    format!(
        "tidal process {} of {} is starting: it serves once every process of the cluster has connected ({}) and it has recovered its WAL in {dir}",
        config.cluster.process_id,
        config.cluster.processes.len(),
        others.join(", ")
    )
}

/// When a process of the cluster goes away, timely's network and worker threads stop by
/// panicking, each with a backtrace: report each as one line instead (the server then
/// restarts itself, see [`rejoin`]). Any other panic is reported as usual.
fn quiet_cluster_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let from_peer_loss = ["timely communication error", "MergeQueue poisoned", "Send thread panic"]
            .iter()
            .any(|m| message.contains(m));
        if from_peer_loss {
            let thread = std::thread::current();
            tracing::warn!(thread = thread.name().unwrap_or("?"), %message, "cluster connection lost");
        } else {
            default(info);
        }
    }));
}

/// Starts this process afresh, with the same arguments, in place (the same pid, so a
/// supervisor or a shell job still holds it): it recovers its WAL and waits for the other
/// processes, and the cluster forms again once every process is up. Returns only if that
/// cannot be done.
fn rejoin(why: String) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let err = match std::env::current_exe() {
            Ok(exe) => std::process::Command::new(exe).args(args).exec(),
            Err(e) => e,
        };
        Err(Error::DataflowStopped(format!(
            "{why}: a process of the cluster left, and this one cannot restart itself ({err}); restart every process"
        )))
    }
    #[cfg(not(unix))]
    Err(Error::DataflowStopped(format!(
        "{why}: a process of the cluster left; restart every process"
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hostfile(dir: &std::path::Path) -> PathBuf {
        let path = dir.join("hosts");
        std::fs::write(&path, "127.0.0.1:7800 127.0.0.1:7700\n127.0.0.1:7801 127.0.0.1:7701\n").expect("hosts");
        path
    }

    #[test]
    fn a_cluster_process_listens_at_its_host_file_address_unless_told_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = ServeOptions {
            processes: Some(2),
            process_id: Some(1),
            hostfile: Some(hostfile(dir.path())),
            ..ServeOptions::default()
        };
        assert_eq!(load_config(&opts).expect("config").server.listen, "127.0.0.1:7701");
        let told = ServeOptions {
            listen: Some("0.0.0.0:7701".into()),
            ..opts.clone()
        };
        assert_eq!(load_config(&told).expect("config").server.listen, "0.0.0.0:7701");
        // A configuration file's own address stays.
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9000\"\n").expect("config");
        let configured = ServeOptions {
            config: Some(file),
            ..opts
        };
        assert_eq!(
            load_config(&configured).expect("config").server.listen,
            "127.0.0.1:9000"
        );
    }
}
