//! `tidal replay` on damaged and on healthy logs: a torn tail fails without
//! `--tolerate-torn-tail` and stops at the last whole record with it; corruption names the
//! file and offset; the WAL's bytes are never changed; the reports are written.

mod replay_support;

use std::path::Path;

use replay_support::*;
use tidal_core::record::Record;
use tidal_sources::wal::WalReader;

/// A log of items and 12 view requests over 6 hours, in small segments.
fn log(dir: &Path) {
    let mut requests = vec![
        vec![Record::Config {
            toml: with_view_half_lives(&["1h"]).to_toml(),
        }],
        vec![put("a", "x"), put("b", "x"), put("c", "y")],
    ];
    for k in 0..12u64 {
        let item = ["a", "b", "c"][(k % 3) as usize];
        requests.push(vec![Record::Signals(
            (0..=k % 4)
                .map(|u| view(item, &format!("u{k}-{u}"), T0 + k * 30 * MIN))
                .collect(),
        )]);
    }
    write_wal(dir, &requests, 700);
}

/// (file, offset) of every record, in log order.
fn record_positions(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut r = WalReader::open(dir, false).expect("open");
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().expect("read") {
        out.push((rec.file, rec.offset));
    }
    out
}

#[test]
fn replay_never_modifies_the_wal_and_writes_both_reports() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    log(&wal);
    let before = files(&wal);
    assert!(before.len() > 2, "expected several segments, got {}", before.len());
    let out_dir = tempfile::tempdir().unwrap();
    let (json, html) = (out_dir.path().join("r.json"), out_dir.path().join("r.html"));
    let v1 = dir.path().join("short.toml");
    std::fs::write(&v1, with_view_half_lives(&["30m"]).to_toml()).unwrap();
    let out = replay_cli(&[
        "--wal",
        wal.to_str().unwrap(),
        "--at",
        "2023-11-14T23:13:20Z",
        "--at",
        &(T0 + 5 * HOUR).to_string(),
        "--query",
        "profile=hot&limit=3",
        "--query",
        "profile=trending&window=1h",
        "--variant",
        &format!("short={}", v1.display()),
        "--json",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(files(&wal), before, "the WAL changed");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["times"], serde_json::json!([T0 + HOUR, T0 + 5 * HOUR]));
    assert_eq!(report["results"].as_array().unwrap().len(), 2 * 2 * 2);
    // Requests up to the last clock asked for (k ≤ 10); reading stops there.
    assert_eq!(report["events"], (0..=10u64).map(|k| k % 4 + 1).sum::<u64>());
    assert!(report["events_per_s"].as_f64().unwrap() > 0.0);
    let row = &report["results"][1];
    assert_eq!(row["variant"], "short");
    for key in ["overlap_at_k", "kendall_tau", "rbo"] {
        assert!(row["vs_baseline"].get(key).is_some(), "{key}");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<svg"));
    assert!(page.contains("profile=hot&amp;limit=3"));
    assert!(!page.contains("<script") && !page.contains("src=\"http"));
}

#[test]
fn a_torn_tail_fails_without_the_flag_and_stops_cleanly_with_it() {
    let dir = tempfile::tempdir().unwrap();
    log(dir.path());
    let positions = record_positions(dir.path());
    let (last_file, last_offset) = positions.last().unwrap().clone();
    // Cut the last record short, as a crash during its write would.
    let len = std::fs::metadata(&last_file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&last_file).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    let before = files(dir.path());
    let wal = dir.path().to_str().unwrap();

    let out = replay_cli(&["--wal", wal, "--json", "-"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("torn"), "{err}");
    assert!(err.contains(&last_file.display().to_string()), "{err}");
    assert!(err.contains(&format!("offset {last_offset}")), "{err}");

    let out = replay_cli(&["--wal", wal, "--json", "-", "--tolerate-torn-tail"]);
    let report = json_of(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("torn record") && err.contains(&format!("offset {last_offset}")),
        "{err}"
    );
    assert_eq!(report["torn_tail"]["offset"], last_offset);
    // Every signal but the last request's (k = 11: 11 % 4 + 1 = 4 signals).
    let whole: u64 = (0..11u64).map(|k| k % 4 + 1).sum();
    assert_eq!(report["events"], whole);
    assert_eq!(files(dir.path()), before, "the torn WAL was modified");
}

#[test]
fn corruption_names_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    log(dir.path());
    let positions = record_positions(dir.path());
    let (file, offset) = positions[4].clone();
    let mut bytes = std::fs::read(&file).unwrap();
    // A byte inside the record's payload (past length, checksum and stamp).
    bytes[offset as usize + 70] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();
    let out = replay_cli(&["--wal", dir.path().to_str().unwrap(), "--tolerate-torn-tail"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains(&format!("offset {offset}")), "{err}");
}

#[test]
fn helpful_errors_for_wrong_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    log(&wal);
    let out = replay_cli(&["--wal", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no WAL segment") && err.contains("did you mean"), "{err}");
    let out = replay_cli(&["--wal", wal.to_str().unwrap(), "--at", "tomorrow"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    let out = replay_cli(&["--wal", wal.to_str().unwrap(), "--query", "profile=nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
