//! A real `tidal serve` process on a loopback port, for end-to-end tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
}

pub fn tidal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidal"))
}

impl Server {
    /// Starts `tidal serve` on an ephemeral port and waits until it serves.
    pub fn start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(data_dir, "127.0.0.1:0", args, env).wait()
    }

    /// Starts `tidal serve` listening on `listen`, without waiting for it (the processes of
    /// a cluster wait for each other).
    pub fn launch(data_dir: &Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Launched {
        let mut cmd = tidal();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(listen)
            .args(args)
            .env("TIDAL_LOG", "warn")
            .env_remove("TIDAL_AUTH_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tidal");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(rest) = line.strip_prefix("tidal serving on ") {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        Launched {
            child: Some(child),
            rx,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGTERM, then waits at most `within` for the process to exit; its exit status.
    pub fn stop(mut self, within: Duration) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(started.elapsed() < within, "no exit within {within:?} after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no shutdown.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        call(ureq::get(&self.url(path)))
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        send(ureq::post(&self.url(path)), body.to_string(), "application/json")
    }

    pub fn post_raw(&self, path: &str, body: &str, content_type: &str) -> (u16, Value) {
        send(ureq::post(&self.url(path)), body.to_string(), content_type)
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        send(ureq::put(&self.url(path)), body.to_string(), "application/json")
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        call(ureq::delete(&self.url(path)))
    }

    /// The value of a `/metrics` series without labels (`None` when absent).
    pub fn metric(&self, name: &str) -> Option<u64> {
        let text = ureq::get(&self.url("/metrics"))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    /// Ranking ids with scores.
    pub fn ranking(&self, query: &str) -> Vec<(String, f64)> {
        let (status, v) = self.get(&format!("/v1/rankings?{query}"));
        assert_eq!(status, 200, "rankings?{query}: {v}");
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                (
                    i["id"].as_str().expect("id").to_string(),
                    i["score"].as_f64().expect("score"),
                )
            })
            .collect()
    }
}

/// A `tidal serve` process started and not yet serving.
pub struct Launched {
    child: Option<Child>,
    rx: std::sync::mpsc::Receiver<String>,
    data_dir: PathBuf,
}

impl Launched {
    /// Waits until it serves; a process that exits first fails the test at once, with its
    /// exit status (its own error is on the test's stderr).
    pub fn wait(mut self) -> Server {
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(base) => break base,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    panic!("tidal exited before it served: {status:?}");
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                        panic!("tidal exited before it served: {status}");
                    }
                    assert!(Instant::now() < deadline, "tidal did not start serving within 60 s");
                }
            }
        };
        Server {
            child: self.child.take().expect("child"),
            base,
            data_dir: self.data_dir.clone(),
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build()
}

pub fn call(req: ureq::Request) -> (u16, Value) {
    finish(req.call())
}

pub fn send(req: ureq::Request, body: String, content_type: &str) -> (u16, Value) {
    finish(req.set("Content-Type", content_type).send_string(&body))
}

fn finish(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn _unused() -> ureq::Agent {
    agent()
}
