//! The HTTP addresses of a cluster's processes when the host file gives timely's alone:
//! each process tells the others its own while they agree on a checkpoint
//! (`tidal_dataflows::Agreement`), and fills in theirs from what they told.

use tidal_core::config::{ClusterConfig, Config};

use super::error::{Error, Result};

/// Whether the host file left some process's HTTP address out.
fn learns_http(cluster: &ClusterConfig) -> bool {
    cluster.processes.iter().any(|p| p.http.is_empty())
}

/// The HTTP address this process tells the others of its cluster: `server.listen`, with an
/// unspecified host (`0.0.0.0`, `[::]`) replaced by the host of its own timely address.
///
/// A loopback address would send processes on other hosts to themselves: when the host file
/// leaves HTTP addresses out and this process's timely address is not on loopback, one is
/// refused.
pub(super) fn told_http(config: &Config) -> Result<String> {
    let listen = &config.server.listen;
    let own = config.cluster.processes.get(config.cluster.process_id);
    let told = match (listen.parse::<std::net::SocketAddr>(), own) {
        (Ok(addr), Some(own)) if addr.ip().is_unspecified() => match own.timely.rsplit_once(':') {
            Some((host, _)) => format!("{host}:{}", addr.port()),
            None => listen.clone(),
        },
        _ => listen.clone(),
    };
    let loopback = |host_port: &str| {
        let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    if let Some(own) = own
        && learns_http(&config.cluster)
        && loopback(&told)
        && !loopback(&own.timely)
    {
        return Err(Error::Config(tidal_core::Error::Config {
            field: "server.listen".into(),
            message: format!(
                "{told} is a loopback address, which the other processes of the cluster (this one's timely \
                 address is {}) would take for themselves: listen on an address they reach (--listen \
                 HOST:PORT, or 0.0.0.0:PORT with an auth token), or give HTTP addresses in the host file",
                own.timely
            ),
        }));
    }
    Ok(told)
}

/// `cluster` with the HTTP addresses it left out taken from `told` (by process, as each told
/// its own); `None` when it left none out.
pub(super) fn learned(cluster: &ClusterConfig, told: &[String]) -> Result<Option<ClusterConfig>> {
    if !learns_http(cluster) {
        return Ok(None);
    }
    let mut cluster = cluster.clone();
    for (i, p) in cluster.processes.iter_mut().enumerate() {
        if p.http.is_empty() {
            match told.get(i).filter(|a| !a.is_empty()) {
                Some(a) => p.http.clone_from(a),
                None => {
                    return Err(Error::DataflowStopped(format!(
                        "process {i} of the cluster did not tell its HTTP address"
                    )));
                }
            }
        }
    }
    tracing::info!(
        addresses = ?cluster.processes.iter().map(|p| p.http.as_str()).collect::<Vec<_>>(),
        "the processes' HTTP addresses, as each told its own"
    );
    Ok(Some(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(hosts: &str, id: usize, listen: &str) -> Config {
        let mut c = Config::default_filled();
        c.cluster = ClusterConfig::parse_hostfile(hosts, id).expect("hosts");
        c.server.listen = listen.into();
        c
    }

    #[test]
    fn the_http_address_a_process_tells_the_others() {
        // An unspecified host is replaced by the host of its timely address.
        let c = cluster("10.0.0.1:7800\n10.0.0.2:7800\n", 1, "0.0.0.0:7700");
        assert_eq!(told_http(&c).expect("told"), "10.0.0.2:7700");
        // On loopback, loopback is what the others reach.
        let c = cluster("127.0.0.1:7800\n127.0.0.1:7801\n", 0, "127.0.0.1:7700");
        assert_eq!(told_http(&c).expect("told"), "127.0.0.1:7700");
        // Loopback told to processes on other hosts would send them to themselves.
        let c = cluster("10.0.0.1:7800\n10.0.0.2:7800\n", 0, "127.0.0.1:7700");
        let e = told_http(&c).expect_err("refused").to_string();
        assert!(e.contains("server.listen") && e.contains("loopback"), "{e}");
        // With the HTTP addresses in the host file, nothing is told that matters.
        let c = cluster(
            "10.0.0.1:7800 10.0.0.1:7700\n10.0.0.2:7800 10.0.0.2:7700\n",
            0,
            "127.0.0.1:7700",
        );
        assert!(told_http(&c).is_ok());
    }
}
