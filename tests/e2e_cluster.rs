//! SPEC §11 through the real binary: a 2-process loopback cluster, fed the same writes as a
//! 1-process server but split at random over its processes, ranks exactly like it (ids,
//! scores, explain, pages) at the same clock; a read on one process sees a write made on
//! the other with its token; `POST /v1/clock` on one process moves both; a process that
//! loses its peer restarts itself, and restarting the lost one gives the same rankings back;
//! both WALs replayed together answer the same.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::{Server, wait_until};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const BASE: u64 = 1_700_000_000_000;
const MIN: u64 = 60_000;

/// A port that is free now and that nothing else will take before the process binds it.
///
/// Port 0 would hand out a port of the kernel's ephemeral range, which it also gives to the
/// source ports of outgoing connections: another test's client could take the port between
/// this check and the process's bind. Ports below that range are never handed out so; each
/// is tried once per test binary (a counter from a per-process start) and kept if it binds.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

struct Cluster {
    hosts: std::path::PathBuf,
    http: [String; 2],
    /// Extra arguments of both processes.
    args: Vec<String>,
}

impl Cluster {
    fn new(dir: &Path) -> Cluster {
        let (t0, t1, h0, h1) = (free_port(), free_port(), free_port(), free_port());
        let hosts = dir.join("hosts");
        std::fs::write(
            &hosts,
            format!("# timely address, HTTP address\n127.0.0.1:{t0} 127.0.0.1:{h0}\n127.0.0.1:{t1} 127.0.0.1:{h1}\n"),
        )
        .expect("hostfile");
        Cluster {
            hosts,
            http: [format!("127.0.0.1:{h0}"), format!("127.0.0.1:{h1}")],
            args: Vec::new(),
        }
    }

    /// The same with timely's own host file (`TIMELY_ADDR` alone on each line): each process
    /// tells the others the HTTP address it listens at as the cluster forms.
    fn timely_only(dir: &Path) -> Cluster {
        let c = Cluster::new(dir);
        let text = std::fs::read_to_string(&c.hosts).expect("hostfile");
        let timely: String = text
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string() + "\n")
            .filter(|l| !l.starts_with('#'))
            .collect();
        std::fs::write(&c.hosts, timely).expect("hostfile");
        c
    }

    /// The same with extra arguments for both processes.
    fn with_args(dir: &Path, args: &[&str]) -> Cluster {
        let mut c = Cluster::new(dir);
        c.args = args.iter().map(|a| a.to_string()).collect();
        c
    }

    /// Starts process `p` on the event clock without waiting for it.
    fn launch(&self, dir: &Path, p: usize) -> common::Launched {
        self.launch_with(dir, p, "event")
    }

    /// Starts process `p` on `clock` without waiting for it.
    fn launch_with(&self, dir: &Path, p: usize, clock: &str) -> common::Launched {
        let hosts = self.hosts.display().to_string();
        let id = p.to_string();
        let mut args = vec![
            "--clock",
            clock,
            "--workers",
            "2",
            "--processes",
            "2",
            "--process-id",
            &id,
            "--hostfile",
            &hosts,
        ];
        args.extend(self.args.iter().map(String::as_str));
        Server::launch(&dir.join(format!("p{p}")), &self.http[p], &args, &[])
    }

    /// Starts both processes (each waits for the other) and waits until both serve.
    fn start(&self, dir: &Path) -> [Server; 2] {
        let launched: Vec<_> = (0..2).map(|p| self.launch(dir, p)).collect();
        let mut it = launched.into_iter().map(|l| l.wait());
        [it.next().expect("p0"), it.next().expect("p1")]
    }
}

/// A metric of `/metrics` (0 when absent).
fn metric(s: &Server, name: &str) -> u64 {
    s.metric(name).unwrap_or(0)
}

/// The clock the whole state is served as of: the cohort counts too.
fn serving_clock(s: &Server) -> u64 {
    let (status, v) = s.get("/v1/clock");
    assert_eq!(status, 200, "{v}");
    let clock = |part: &str| v[part]["clock"].as_u64().unwrap_or(0);
    clock("serving").min(clock("cohorts"))
}

/// The whole answer of a ranking query but the state it was read from.
fn answer(s: &Server, query: &str) -> Value {
    let (status, mut v) = s.get(&format!("/v1/rankings?{query}"));
    assert_eq!(status, 200, "{query}: {v}");
    v.as_object_mut().expect("object").remove("as_of");
    v
}

const QUERIES: [&str; 14] = [
    "profile=trending&window=24h&cohort=region:US&limit=50",
    "profile=rising&window=1h&cohort=gender:F&limit=50&explain=1",
    "profile=trending&window=24h&cohort=region:EU,gender:M&limit=50",
    "profile=trending&window=24h&cohort=region:US,gender:F&signals=view:1,like:3&limit=50",
    "profile=top&limit=50",
    "profile=trending&window=1h&limit=50",
    "profile=trending&window=24h&signals=view:1,like:3,share:5&limit=50&explain=1",
    "profile=hot&half_life=1h&limit=50",
    "profile=hot&half_life=24h&signals=like:1,share:2&max_per_creator=2&limit=50",
    "profile=rising&window=1h&limit=50",
    "profile=top&category=c1&limit=50",
    "profile=top&max_per_creator=1&limit=50",
    "profile=new&limit=50",
    "profile=top&limit=7",
];

/// Rankings for a user, text searches and `for_you`: the user's state lives on its owner
/// process, the text and embeddings of the items on theirs.
const PERSONAL: [&str; 12] = [
    "profile=trending&window=24h&user=v1&filter=unseen&limit=50",
    "profile=hot&half_life=1h&user=v2&limit=50&explain=1",
    "profile=following&user=v3&limit=50",
    "profile=following&user=v3&half_life=24h&limit=50",
    "profile=trending&window=24h&cohort=region:US&user=v4&filter=unseen&max_per_creator=2&limit=50",
    "q=piano&limit=50&explain=1",
    "q=piano%20lesson&limit=5",
    "q=piano&profile=trending&window=24h&cohort=region:US&limit=50&explain=1",
    "q=concert&profile=hot&half_life=24h&user=v5&limit=50",
    "profile=for_you&user=v1&limit=50&explain=1",
    "profile=for_you&user=v6&filter=all&max_per_creator=1&limit=20",
    "q=piano&profile=for_you&user=v2&limit=50&explain=1",
];

#[test]
fn a_two_process_cluster_ranks_exactly_like_one_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Exact nearest-item search and one merged text segment: the answers of any layout agree.
    let cfg = dir.path().join("tidal.toml");
    // Checkpoints every 150 signals: the processes checkpoint together, and the restart
    // below restores the newest checkpoint both hold.
    std::fs::write(
        &cfg,
        "[personalization]\nexact_search = true\n\n[engine]\ncheckpoint_every = 150\n",
    )
    .expect("config");
    let cfg = cfg.display().to_string();
    let single = Server::start(
        &dir.path().join("single"),
        &["--clock", "event", "--workers", "2", "--config", &cfg],
        &[],
    );
    let cluster = Cluster::with_args(dir.path(), &["--config", &cfg]);
    let procs = cluster.start(dir.path());
    let mut rng = StdRng::seed_from_u64(11);

    // Items with creators, categories, titles and embeddings, each put once on a process
    // chosen at random.
    let titles = [
        "piano lesson",
        "guitar solo",
        "piano concert",
        "drum beat",
        "jazz piano trio",
    ];
    for i in 0..60 {
        let x = i as f64;
        let body = json!({
            "creator": format!("u{}", i % 7),
            "category": format!("c{}", i % 3),
            "created_at": BASE + i * MIN,
            "title": format!("{} {i}", titles[(i % 5) as usize]),
            "embedding": [x.cos(), x.sin(), (i % 3) as f64, 0.5],
        });
        let path = format!("/v1/items/m{i}");
        assert_eq!(single.put(&path, &body).0, 200);
        let (status, v) = procs[rng.gen_range(0..2)].put(&path, &body);
        assert_eq!(status, 200, "{v}");
        assert!(
            v["token"].is_string(),
            "an item write in a cluster answers a token: {v}"
        );
    }
    // Users with cohort attributes, each put on a process at random; a composite cohort
    // declared on one process.
    let put_users = |rng: &mut StdRng| {
        for u in 0..30 {
            let region = ["US", "EU", "AS"][rng.gen_range(0..3)];
            let gender = ["F", "M"][rng.gen_range(0..2)];
            let body = json!({"attributes": {"region": region, "gender": gender}});
            let path = format!("/v1/users/v{u}");
            assert_eq!(single.put(&path, &body).0, 200);
            assert_eq!(procs[rng.gen_range(0..2)].put(&path, &body).0, 200);
        }
    };
    put_users(&mut rng);
    // Follows and blocks.
    for (user, creator, kind) in [
        ("v3", "u1", "follow"),
        ("v3", "u4", "follow"),
        ("v1", "u2", "block"),
        ("v2", "u5", "follow"),
        ("v6", "u0", "follow"),
    ] {
        let body = json!({"user": user, "creator": creator, "kind": kind, "active": true});
        assert_eq!(single.post("/v1/relationships", &body).0, 200);
        assert_eq!(procs[rng.gen_range(0..2)].post("/v1/relationships", &body).0, 200);
    }
    let def = json!({"where": {"region": "US", "gender": "F"}});
    assert_eq!(single.put("/v1/cohorts/us-f", &def).0, 200);
    assert_eq!(procs[1].put("/v1/cohorts/us-f", &def).0, 200);
    // Batches of signals over three hours of event time, some late, each batch to the single
    // server and to a process at random; halfway, every user's attributes change.
    let kinds = ["view", "view", "view", "like", "share", "skip", "hide"];
    let mut end = BASE;
    let mut n = 0u64;
    for b in 0..80u64 {
        if b == 40 {
            put_users(&mut rng);
        }
        let at = BASE + 60 * MIN + b * 2 * MIN;
        let batch: Vec<Value> = (0..rng.gen_range(1..25))
            .map(|_| {
                n += 1;
                let late = if rng.gen_bool(0.2) {
                    rng.gen_range(0..90) * MIN
                } else {
                    0
                };
                let ts = at.saturating_sub(late) + rng.gen_range(0..MIN);
                end = end.max(ts);
                json!({
                    "type": kinds[rng.gen_range(0..kinds.len())],
                    "item": format!("m{}", (rng.r#gen::<f64>().powi(2) * 60.0) as u64),
                    "user": format!("v{}", rng.gen_range(0..30)),
                    "ts": ts,
                    "id": format!("s{n}"),
                })
            })
            .collect();
        let body = Value::Array(batch);
        assert_eq!(single.post("/v1/signals", &body).0, 200);
        let (status, v) = procs[rng.gen_range(0..2)].post("/v1/signals", &body);
        assert_eq!(status, 200, "{v}");
        assert!(v["token"].is_string(), "a cluster write answers a token: {v}");
    }
    // One clock for everyone: POST /v1/clock on process 0 moves process 1 too.
    let clock = end + 5 * MIN;
    assert_eq!(single.post("/v1/clock", &json!({ "advance_to": clock })).0, 200);
    let (status, v) = procs[0].post("/v1/clock", &json!({ "advance_to": clock }));
    assert_eq!(status, 200, "{v}");
    for s in [&single, &procs[0], &procs[1]] {
        wait_until("the serving clock", Duration::from_secs(20), || {
            serving_clock(s) >= clock
        });
    }

    for q in QUERIES {
        let want = answer(&single, q);
        assert!(
            !want["items"].as_array().expect("items").is_empty(),
            "{q}: the single process ranks nothing"
        );
        for (p, s) in procs.iter().enumerate() {
            assert_eq!(answer(s, q), want, "process {p} answers {q} differently");
        }
    }
    // Paging through a ranking: every page the same.
    let mut cursor = String::new();
    for _ in 0..4 {
        let q = format!("profile=trending&window=24h&limit=6{cursor}");
        let want = answer(&single, &q);
        assert_eq!(answer(&procs[1], &q), want, "page {q}");
        match want["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    // Text becomes searchable within personalization.text_refresh (1s).
    std::thread::sleep(Duration::from_millis(1100));
    for q in PERSONAL {
        let want = answer(&single, q);
        assert!(
            !want["items"].as_array().expect("items").is_empty(),
            "{q}: the single process ranks nothing"
        );
        for (p, s) in procs.iter().enumerate() {
            assert_eq!(answer(s, q), want, "process {p} answers {q} differently");
        }
    }
    // A user's state on any process (answered by its owner), with its preference vector
    // (the embeddings of items other processes own taken from them).
    // Its top creators are named by whichever process holds their items.
    let users = (0..8).map(|u| (u, false)).chain([(1, true), (2, true)]);
    for (u, vector) in users {
        let path = format!("/v1/users/v{u}{}", if vector { "?vector=1" } else { "" });
        let (_, mut want) = single.get(&path);
        if vector {
            assert!(want["vector"].is_array(), "{path}: {want}");
        }
        want.as_object_mut().expect("user").remove("as_of");
        for s in &procs {
            let (status, mut got) = s.get(&path);
            assert_eq!(status, 200, "{path}: {got}");
            got.as_object_mut().expect("user").remove("as_of");
            assert_eq!(got, want, "{path}");
        }
    }
    // An item's features, whichever process owns it, and its counts in a cohort.
    for i in [0, 1, 2, 3, 17, 42] {
        let path = format!("/v1/items/m{i}?cohort=region:US");
        let (_, mut want) = single.get(&path);
        want.as_object_mut().expect("item").remove("as_of");
        for s in &procs {
            let (status, mut got) = s.get(&path);
            assert_eq!(status, 200, "{path}: {got}");
            got.as_object_mut().expect("item").remove("as_of");
            assert_eq!(got, want, "{path}");
        }
        // Both processes answer the owner's bytes: the same fields in the same order.
        let raw: Vec<String> = procs
            .iter()
            .map(|s| {
                ureq::get(&s.url(&path))
                    .call()
                    .expect("item read")
                    .into_string()
                    .expect("body")
            })
            .collect();
        assert_eq!(raw[0], raw[1], "{path}");
        assert!(raw[0].starts_with("{\"id\":"), "the item's id first: {}", raw[0]);
    }

    // Read-your-writes across processes: a write on process 1, read on process 0 with its
    // token, at the clock both processes were moved to.
    let (status, ack) = procs[1].post(
        "/v1/signals",
        &json!([{"type": "share", "item": "fresh", "ts": clock, "weight": 1000}]),
    );
    assert_eq!(status, 200, "{ack}");
    let token = ack["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("1:"), "{token}");
    let (status, v) = procs[0].post("/v1/clock", &json!({ "advance_to": clock + 1 }));
    assert_eq!(status, 200, "{v}");
    let top = procs[0].ranking(&format!("profile=top&signal=share&limit=1&min_lsn={token}"));
    assert_eq!(top.first().map(|t| t.0.as_str()), Some("fresh"), "{top:?}");
    let (status, v) = procs[0].get("/v1/rankings?min_lsn=7:1");
    assert_eq!(status, 400, "a process outside the cluster: {v}");

    // Writes in the millisecond the event clock is at: each process numbers its batches, and
    // tells the others of each before acknowledging it. Likes on process 1 are visible on
    // process 0 at once (they waited for process 0 to number as many batches), and of two
    // puts of one item, the later one stays, though process 0 has numbered more batches in
    // this millisecond (the earlier one stayed).
    let token = |ack: &Value| ack["token"].as_str().expect("token").to_string();
    let mut last = String::new();
    for _ in 0..40 {
        let (status, ack) = procs[1].post("/v1/signals", &json!({"type": "like", "item": "same-ms"}));
        assert_eq!(status, 200, "{ack}");
        last = token(&ack);
    }
    let likes = |s: &Server, min_lsn: &str| -> Option<f64> {
        s.ranking(&format!("profile=top&signal=like&limit=1000&min_lsn={min_lsn}"))
            .into_iter()
            .find(|t| t.0 == "same-ms")
            .map(|t| t.1)
    };
    let seen = likes(&procs[0], &last);
    assert!(seen.is_some(), "process 0 sees process 1's likes");
    assert_eq!(likes(&procs[1], &last), seen);
    for _ in 0..60 {
        let (status, ack) = procs[0].post("/v1/signals", &json!({"type": "view", "item": "busy"}));
        assert_eq!(status, 200, "{ack}");
    }
    let mut put = String::new();
    for (p, category) in [(0, "news"), (1, "sport")] {
        let (status, ack) = common::send(
            ureq::put(&procs[p].url("/v1/items/ordered")),
            json!({ "category": category }).to_string(),
            "application/json",
        );
        assert_eq!(status, 200, "{ack}");
        put = token(&ack);
    }
    for s in &procs {
        let (status, v) = s.get(&format!("/v1/items/ordered?min_lsn={put}"));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["category"], "sport", "the later put stays: {v}");
    }

    // kill -9 one process: the other one's dataflow breaks and it starts itself afresh (same
    // pid), waiting for the cluster; restarting the killed one alone forms the cluster again,
    // each process recovering its own WAL, and it ranks as before.
    // The rankings before, at the clock the restarted cluster is moved to below.
    wait_until("the serving clock before restart", Duration::from_secs(20), || {
        serving_clock(&procs[0]) > clock
    });
    let before: Vec<Value> = QUERIES.iter().chain(&PERSONAL).map(|q| answer(&procs[0], q)).collect();
    for s in &procs {
        wait_until("a checkpoint on each process", Duration::from_secs(20), || {
            metric(s, "tidal_checkpoint_lsn") > 0
        });
    }
    let [p0, p1] = procs;
    let pid = p0.child.id();
    p1.kill9();
    wait_until("process 0 to stop serving", Duration::from_secs(20), || {
        ureq::get(&p0.url("/healthz")).call().is_err()
    });
    // The killed process lost its newest checkpoint: the processes agree on the newest one
    // both still hold.
    let mut ckpts: Vec<_> = std::fs::read_dir(dir.path().join("p1/checkpoints"))
        .expect("checkpoints")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ckpt-"))
        })
        .collect();
    ckpts.sort();
    assert!(ckpts.len() >= 2, "two checkpoints kept: {ckpts:?}");
    std::fs::remove_dir_all(ckpts.last().expect("newest")).expect("remove the newest checkpoint");
    let p1 = cluster.launch(dir.path(), 1).wait();
    wait_until("process 0 to serve again", Duration::from_secs(30), || {
        ureq::get(&p0.url("/healthz")).call().is_ok()
    });
    assert_eq!(p0.child.id(), pid, "process 0 restarted in place");
    let procs = [p0, p1];
    // What was acknowledged before the kill is visible again without a write or a clock
    // move: each process tells the others of the last batch it recovered.
    for s in &procs {
        wait_until(
            "the writes before the kill, visible again",
            Duration::from_secs(20),
            || s.get(&format!("/v1/items/ordered?min_lsn={put}")).0 == 200,
        );
    }
    let (status, v) = procs[0].post("/v1/clock", &json!({ "advance_to": clock + 1 }));
    assert_eq!(status, 200, "{v}");
    for s in &procs {
        wait_until("the serving clock after restart", Duration::from_secs(20), || {
            serving_clock(s) > clock
        });
    }
    // Both restored the same checkpoint's frontier and replayed only their WALs after it.
    for s in &procs {
        assert!(metric(s, "tidal_restored_lsn") > 0, "a checkpoint was restored");
    }
    std::thread::sleep(Duration::from_millis(1100));
    for (q, want) in QUERIES.iter().chain(&PERSONAL).zip(&before) {
        for s in &procs {
            assert_eq!(&answer(s, q), want, "{q} after restarting the cluster");
        }
    }

    // Both WALs replayed together offline answer what the cluster served.
    let wals: Vec<_> = procs.iter().map(|s| s.data_dir.join("wal")).collect();
    // On the event clock a process stopped alone takes no checkpoint (an idle process would
    // not move past the frontier asked for) but exits at once, with success.
    let [p0, p1] = procs;
    let status = p1.stop(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    p0.kill9();
    let mut cmd = common::tidal();
    cmd.arg("replay");
    for w in &wals {
        cmd.arg("--wal").arg(w);
    }
    cmd.args(["--at", &(clock + 1).to_string(), "--json", "-", "--no-progress"]);
    for q in QUERIES {
        cmd.args(["--query", q]);
    }
    let out = cmd.output().expect("replay");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    let ids_scores = |items: &Value| -> Vec<(Value, Value)> {
        items
            .as_array()
            .expect("items")
            .iter()
            .map(|i| (i["id"].clone(), i["score"].clone()))
            .collect()
    };
    for (q, want) in QUERIES.iter().zip(&before) {
        let row = report["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["query"] == *q)
            .unwrap_or_else(|| panic!("no replay result for {q}"));
        assert_eq!(
            ids_scores(&row["items"]),
            ids_scores(&want["items"]),
            "replay of both WALs: {q}"
        );
    }

    // `tidal checkpoint` on a cluster process's directory says why it cannot (rather than
    // waiting for the other processes for ever).
    let out = common::tidal()
        .arg("checkpoint")
        .arg(dir.path().join("p0"))
        .output()
        .expect("checkpoint");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster"), "{err}");
}

/// On the wall clock (the default) the processes' clocks move on their own: a write on one
/// process is read on the other with its token, and both rank it alike.
#[test]
fn a_wall_clock_cluster_reads_its_writes_on_every_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Timely's own host file: the processes learn each other's HTTP addresses.
    let cluster = Cluster::timely_only(dir.path());
    let launched: Vec<_> = (0..2).map(|p| cluster.launch_with(dir.path(), p, "wall")).collect();
    let procs: Vec<Server> = launched.into_iter().map(|l| l.wait()).collect();
    let mut tokens = Vec::new();
    for (p, s) in procs.iter().enumerate() {
        let body = json!([{"type": "like", "item": format!("w{p}"), "weight": (p + 1) as f64}]);
        let (status, ack) = s.post("/v1/signals", &body);
        assert_eq!(status, 200, "{ack}");
        tokens.push(ack["token"].as_str().expect("token").to_string());
    }
    for (p, s) in procs.iter().enumerate() {
        // The other process's write, by its token.
        let token = &tokens[1 - p];
        let top = s.ranking(&format!("profile=top&signal=like&min_lsn={token}"));
        let ids: Vec<&str> = top.iter().map(|t| t.0.as_str()).collect();
        assert!(ids.contains(&format!("w{}", 1 - p).as_str()), "process {p}: {top:?}");
    }
    let a = procs[0].ranking(&format!("profile=top&signal=like&min_lsn={}", tokens[1]));
    let b = procs[1].ranking(&format!("profile=top&signal=like&min_lsn={}", tokens[0]));
    assert_eq!(a, b);
    assert_eq!(a.first().map(|t| t.0.as_str()), Some("w1"));

    // Many readers at once on both processes: each scattered ranking waits on the other
    // process's share. When those waits held the threads that answer shares, four readers
    // were enough for every thread of both processes to wait on a share queued behind them
    // (10 s, then 502 peer_unavailable).
    let urls: Vec<String> = procs
        .iter()
        .map(|s| s.url("/v1/rankings?profile=top&signal=like&limit=50"))
        .collect();
    let readers: Vec<_> = (0..16)
        .map(|i| {
            let url = urls[i % 2].clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
                (0..8)
                    .map(|_| match agent.get(&url).call() {
                        Ok(r) => (r.status(), String::new()),
                        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
                        Err(e) => (0, e.to_string()),
                    })
                    .filter(|(status, _)| *status != 200)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for r in readers {
        let failed = r.join().expect("reader");
        assert!(failed.is_empty(), "concurrent reads failed: {failed:?}");
    }

    // SIGTERM one process: it asks for a checkpoint before it stops, every process writes
    // its part at that frontier (the wall clock moves both past it), and it exits with
    // success; the other starts itself afresh; restarting the stopped one forms the cluster
    // again, both restored from that checkpoint, with the same ranking.
    let checkpoints = |p: usize| -> Vec<String> {
        std::fs::read_dir(dir.path().join(format!("p{p}/checkpoints")))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with("ckpt-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(checkpoints(1).is_empty(), "no checkpoint was due before the stop");
    let mut procs = procs.into_iter();
    let (p0, p1) = (procs.next().expect("p0"), procs.next().expect("p1"));
    let status = p1.stop(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    let at_stop = checkpoints(1);
    assert_eq!(at_stop.len(), 1, "a checkpoint at the stop: {at_stop:?}");
    // Its name ends with the frontier; the other process wrote its part there too.
    let frontier = at_stop[0].rsplit('-').next().expect("frontier").to_string();
    wait_until("the other process's part", Duration::from_secs(20), || {
        checkpoints(0).iter().any(|n| n.ends_with(&format!("-{frontier}")))
    });
    let p1 = cluster.launch_with(dir.path(), 1, "wall").wait();
    wait_until("process 0 to serve again", Duration::from_secs(30), || {
        ureq::get(&p0.url("/healthz")).call().is_ok()
    });
    for s in [&p0, &p1] {
        assert!(
            metric(s, "tidal_restored_lsn") > 0,
            "the stop's checkpoint was restored"
        );
    }
    assert_eq!(p1.ranking("profile=top&signal=like"), a);
    assert_eq!(p0.ranking("profile=top&signal=like"), a);

    // An item deleted and put again on one process, and signals for it on both, the one on
    // the other process written between the put and the next: kill -9 and a restart (each
    // process recovering its own WAL's tail) rank it as before, every signal counted.
    for (method, body) in [
        ("PUT", json!({"category": "a"})),
        ("DELETE", Value::Null),
        ("PUT", json!({"category": "a"})),
    ] {
        let req = ureq::request(method, &p1.url("/v1/items/x"));
        let (status, v) = match method {
            "PUT" => common::send(req, body.to_string(), "application/json"),
            _ => common::call(req),
        };
        assert_eq!(status, 200, "{method}: {v}");
        assert!(
            v["token"].as_str().is_some_and(|t| t.starts_with("1:")),
            "{method}: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut tokens = Vec::new();
    for (s, kind) in [(&p0, "like"), (&p1, "share")] {
        let (status, ack) = s.post("/v1/signals", &json!({"type": kind, "item": "x"}));
        assert_eq!(status, 200, "{ack}");
        tokens.push(ack["token"].as_str().expect("token").to_string());
        std::thread::sleep(Duration::from_millis(20));
    }
    let both = |s: &Server| {
        let likes = s.ranking(&format!("profile=top&signal=like&min_lsn={}", tokens[0]));
        let shares = s.ranking(&format!("profile=top&signal=share&min_lsn={}", tokens[1]));
        let all = s.ranking(&format!("profile=top&min_lsn={}", tokens[1]));
        (likes, shares, all)
    };
    let before = both(&p0);
    assert!(before.0.iter().any(|t| t.0 == "x"), "the like is counted: {before:?}");
    assert!(before.1.iter().any(|t| t.0 == "x"), "the share is counted: {before:?}");
    assert_eq!(both(&p1), before);
    let pid = p0.child.id();
    p1.kill9();
    wait_until("process 0 to stop serving", Duration::from_secs(20), || {
        ureq::get(&p0.url("/healthz")).call().is_err()
    });
    let p1 = cluster.launch_with(dir.path(), 1, "wall").wait();
    wait_until("process 0 to serve again", Duration::from_secs(30), || {
        ureq::get(&p0.url("/healthz")).call().is_ok()
    });
    assert_eq!(p0.child.id(), pid, "process 0 restarted in place");
    assert_eq!(both(&p0), before, "process 0 after the restart");
    assert_eq!(both(&p1), before, "process 1 after the restart");
    // A bare `min_lsn` is an LSN of the process asked, the item's owner or not: each process
    // writes past the other's last LSN, then reads the item with its own.
    let procs = [&p0, &p1];
    for (p, s) in procs.iter().enumerate() {
        let other = procs[1 - p].get("/healthz").1["lsn"].as_u64().expect("lsn");
        let mut lsn = 0;
        for n in 0.. {
            if lsn > other + 10 {
                break;
            }
            let id = format!("pad-{p}-{n}");
            let (status, ack) = s.post("/v1/signals", &json!({"type": "view", "item": "pad", "id": id}));
            assert_eq!(status, 200, "{ack}");
            lsn = ack["lsn"].as_u64().expect("lsn");
        }
        let (status, v) = s.get(&format!("/v1/items/x?min_lsn={lsn}"));
        assert_eq!(status, 200, "process {p}, its own LSN {lsn}: {v}");
    }
    // A bad parameter is the asker's 400 on either process, the item's owner or not; a token
    // past what its process has written is the owner's own answer (400 for its own log, 503
    // after waiting for another's), never a 502 from the process that forwarded it.
    for s in [&p0, &p1] {
        let (status, v) = s.get("/v1/items/x?cohort=planet:mars");
        assert_eq!(status, 400, "{v}");
        for p in 0..2 {
            let (status, v) = s.get(&format!("/v1/items/x?min_lsn={p}:999999999"));
            let code = v["error"]["code"].as_str().unwrap_or("");
            assert!(
                (status, code) == (400, "lsn_not_written") || (status, code) == (503, "lsn_not_visible"),
                "{status} {v}"
            );
        }
    }
}

/// On the event clock an idle process does not move on its own: after a kill -9 and a
/// restart, what one process recovered past the other's last batch is visible once each has
/// told the others of its last batch, with no write or clock move. Then: a user's top
/// creators are named whichever process holds their items.
#[test]
fn an_event_clock_cluster_shows_what_it_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::new(dir.path());
    let [p0, p1] = cluster.start(dir.path());
    let (status, ack) = p0.post("/v1/signals", &json!({"type": "like", "item": "a", "ts": BASE}));
    assert_eq!(status, 200, "{ack}");
    let mut last = String::new();
    for i in 1..=5u64 {
        let body = json!({"type": "like", "item": format!("b{i}"), "ts": BASE + i * 1000});
        let (status, ack) = p1.post("/v1/signals", &body);
        assert_eq!(status, 200, "{ack}");
        last = ack["token"].as_str().expect("token").to_string();
    }
    let pid = p0.child.id();
    p1.kill9();
    wait_until("process 0 to stop serving", Duration::from_secs(20), || {
        ureq::get(&p0.url("/healthz")).call().is_err()
    });
    let p1 = cluster.launch(dir.path(), 1).wait();
    wait_until("process 0 to serve again", Duration::from_secs(30), || {
        ureq::get(&p0.url("/healthz")).call().is_ok()
    });
    assert_eq!(p0.child.id(), pid, "process 0 restarted in place");
    // Without `min_lsn`, a read answers the recovered state or 503 `starting` until it is
    // visible, never the state before it.
    for s in [&p0, &p1] {
        let mut answered = None;
        wait_until("a read without min_lsn", Duration::from_secs(20), || {
            let (status, v) = s.get("/v1/rankings?profile=top&signal=like&limit=10");
            if status == 200 {
                answered = Some(v);
                return true;
            }
            assert_eq!((status, v["error"]["code"].as_str()), (503, Some("starting")), "{v}");
            false
        });
        let v = answered.expect("answered");
        assert_eq!(v["items"].as_array().map(Vec::len), Some(6), "the recovered likes: {v}");
    }
    for s in [&p0, &p1] {
        wait_until("process 1's writes, visible again", Duration::from_secs(20), || {
            s.get(&format!("/v1/rankings?profile=top&min_lsn={last}")).0 == 200
        });
        let top = s.ranking(&format!("profile=top&signal=like&limit=10&min_lsn={last}"));
        assert_eq!(top.len(), 6, "{top:?}");
    }

    // A user's top creators are named by whichever process holds their items: six users,
    // each liking one creator's item, are owned by either process, and so are the items.
    let mut tokens = Vec::new();
    for k in 0..6u64 {
        let (status, ack) = common::send(
            ureq::put(&p0.url(&format!("/v1/items/made-{k}"))),
            json!({ "creator": format!("maker-{k}") }).to_string(),
            "application/json",
        );
        assert_eq!(status, 200, "{ack}");
        let body = json!({"type": "like", "item": format!("made-{k}"), "user": format!("fan-{k}"), "ts": BASE + 5000});
        let (status, ack) = p0.post("/v1/signals", &body);
        assert_eq!(status, 200, "{ack}");
        tokens.push(ack["token"].as_str().expect("token").to_string());
    }
    for s in [&p0, &p1] {
        for (k, token) in tokens.iter().enumerate() {
            let (status, v) = s.get(&format!("/v1/users/fan-{k}?min_lsn={token}"));
            assert_eq!(status, 200, "{v}");
            let top: Vec<&str> = v["top_creators"]
                .as_array()
                .expect("top_creators")
                .iter()
                .filter_map(|c| c["creator"].as_str())
                .collect();
            assert_eq!(top, [format!("maker-{k}")], "fan-{k}: {v}");
        }
    }
}

#[test]
fn a_bad_hostfile_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1:7800 127.0.0.1:7700\n127.0.0.1:7801 127.0.0.1:7701 x\n",
    )
    .expect("hostfile");
    let out = common::tidal()
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("d"))
        .args(["--processes", "2", "--process-id", "1", "--hostfile"])
        .arg(&hosts)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hostfile line 2"), "{err}");

    std::fs::write(&hosts, "127.0.0.1:7800 127.0.0.1:7700\n").expect("hostfile");
    let out = common::tidal()
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("d"))
        .args(["--processes", "2", "--process-id", "0", "--hostfile"])
        .arg(&hosts)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--processes"), "{err}");
}

#[test]
fn a_process_waiting_for_its_cluster_answers_503_naming_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::new(dir.path());
    let p0 = cluster.launch(dir.path(), 0);
    // Process 1 is not started: process 0 listens already, and says what it waits for.
    let url = |path: &str| format!("http://{}{path}", cluster.http[0]);
    let mut answer = None;
    wait_until("process 0 to answer while it waits", Duration::from_secs(30), || {
        match ureq::get(&url("/healthz")).call() {
            Err(ureq::Error::Status(status, resp)) => answer = Some((status, resp)),
            Ok(resp) => answer = Some((resp.status(), resp)),
            Err(_) => {}
        }
        answer.is_some()
    });
    let (status, resp) = answer.expect("an answer");
    assert_eq!(status, 503);
    assert_eq!(resp.header("Retry-After"), Some("1"));
    // Each answer closes its connection: the listener's connections end once it serves.
    assert_eq!(resp.header("Connection"), Some("close"));
    let v: Value = serde_json::from_str(&resp.into_string().expect("body")).expect("json");
    assert_eq!(v["error"]["code"], "starting", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("process 0 of 2"), "{message}");
    let hosts = std::fs::read_to_string(&cluster.hosts).expect("hostfile");
    let peer = hosts
        .lines()
        .nth(2)
        .and_then(|l| l.split_whitespace().next())
        .expect("peer");
    assert!(
        message.contains(peer),
        "names the process it waits for ({peer}): {message}"
    );
    // A write is refused alike: nothing is taken before the engine runs.
    let (status, v) = common::send(
        ureq::post(&url("/v1/signals")),
        json!({"type": "like", "item": "m1"}).to_string(),
        "application/json",
    );
    assert_eq!((status, v["error"]["code"].as_str()), (503, Some("starting")), "{v}");
    // Once the other process starts, both serve.
    let p1 = cluster.launch(dir.path(), 1);
    let (p0, p1) = (p0.wait(), p1.wait());
    for s in [&p0, &p1] {
        let (status, v) = s.get("/healthz");
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = p0.post("/v1/signals", &json!({"type": "like", "item": "m1"}));
    assert_eq!(status, 200, "{v}");
    // A share asked for more than a page ever needs is refused before anything is sized by
    // it (a text search's collector would ask for petabytes).
    let share = json!({"frontier": 1, "need": 1u64 << 46,
        "pairs": [["q", "a"]], "text": {"docs": 0, "tokens": [], "terms": []}});
    let (status, v) = p0.post("/v1/internal/share", &share);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_parameter")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| m.contains("need")),
        "{v}"
    );
    let (status, v) = p0.get("/healthz");
    assert_eq!(status, 200, "{v}");
}
