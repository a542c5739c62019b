//! An application embedding tidal: no HTTP, no second process. Two threads play a feed's
//! clients — one posts engagement as it happens, one polls "what is trending" for a home
//! page — while the main thread publishes new items. At the end the engine is shut down,
//! reopened from its data directory, and answers exactly as before.
//!
//! `cargo run --example embedded [DATA_DIR]` (a temporary directory when none is given).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidal::{Config, ItemMeta, NewSignal, RankQuery, Tidal};

const TOPICS: [&str; 4] = ["piano", "guitar", "drums", "violin"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| tmp.path().join("feed"), Into::into);
    let mut config = Config::default_filled();
    config.engine.data_dir = dir.display().to_string();
    let tidal = Arc::new(Tidal::open(config.clone())?);
    println!(
        "opened {} ({} records recovered)",
        dir.display(),
        tidal.recovered_records()
    );

    // The catalogue: items with a creator and a category.
    for i in 0..40u64 {
        let topic = TOPICS[(i % 4) as usize];
        let meta = ItemMeta {
            creator: Some(format!("creator-{}", i % 7)),
            category: Some(topic.into()),
            title: Some(format!("{topic} lesson {i}")),
            ..Default::default()
        };
        tidal.put_item(&format!("{topic}-{i}"), meta)?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));

    // Engagement: batches of views, likes and shares, skewed towards piano.
    let engagement = {
        let (tidal, stop, written) = (tidal.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || -> Result<u64, tidal::Error> {
            let mut last_lsn = 0;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<NewSignal> = (0..50)
                    .map(|j| {
                        n += 1;
                        let i = (n * 7 + j) % 40;
                        let i = if n.is_multiple_of(3) { i - i % 4 } else { i }; // a third go to piano
                        let topic = TOPICS[(i % 4) as usize];
                        let kind = ["view", "view", "view", "like", "share"][(n % 5) as usize];
                        NewSignal::new(kind, format!("{topic}-{i}"))
                            .user(format!("u{}", n % 100))
                            .id(format!("e{n}"))
                    })
                    .collect();
                let ack = tidal.signals(batch)?;
                written.fetch_add(ack.accepted as u64, Ordering::Relaxed);
                last_lsn = ack.lsn;
            }
            Ok(last_lsn)
        })
    };

    // A home page polling the trending blend, never waiting for the writer.
    let home_page = {
        let (tidal, stop) = (tidal.clone(), stop.clone());
        std::thread::spawn(move || -> Result<(usize, Duration), tidal::Error> {
            let query = RankQuery::new()
                .profile("trending")
                .window("1h")
                .max_per_creator(2)
                .limit(10);
            let (mut polls, mut slowest) = (0usize, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let page = tidal.rank(&query)?;
                slowest = slowest.max(started.elapsed());
                polls += 1;
                if polls.is_multiple_of(200)
                    && let Some(top) = page.items.first()
                {
                    println!(
                        "  poll {polls}: #1 is {} (score {:.2}) as of LSN {}",
                        top.id, top.score, page.as_of.lsn
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok((polls, slowest))
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let last_lsn = engagement.join().map_err(|_| "the writer panicked")??;
    let (polls, slowest) = home_page.join().map_err(|_| "the reader panicked")??;
    println!(
        "wrote {} signals; the home page polled {polls} times, slowest {:.2} ms",
        written.load(Ordering::Relaxed),
        slowest.as_secs_f64() * 1e3
    );

    // Read your writes, then the same answer after a restart.
    let query = RankQuery::new()
        .profile("top")
        .signals(&[("view", 1.0), ("like", 3.0), ("share", 5.0)])
        .limit(5);
    let before = tidal.rank(&query.clone().min_lsn(last_lsn))?;
    for item in &before.items {
        println!("  {:>2}. {:<12} {:>8.1}", item.rank, item.id, item.score);
    }
    tidal.shutdown()?;
    drop(tidal);
    let reopened = Tidal::open(config)?;
    let after = reopened.rank(&query)?;
    assert_eq!(after.items, before.items, "the reopened engine answers as before");
    println!("reopened: the same top 5");
    reopened.shutdown()?;
    Ok(())
}
