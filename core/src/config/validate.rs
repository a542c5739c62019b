//! [`Config::validate`]: every rule the engine relies on, checked once at start; the error
//! names the first bad field by its path.

use std::net::SocketAddr;

use super::{
    BUILTIN_PROFILES, Config, MAX_CANDIDATES, MAX_HALF_LIVES, MAX_SIGNAL_TYPES, MAX_WEIGHT_BOUND, MAX_WINDOWS,
    is_rank_weight,
};
use crate::duration::Dur;
use crate::error::{Error, Result};

/// What a ranking weight must be.
const RANK_WEIGHT: &str = "must be a weight within 0..=1000000";

/// The longest window, half-life or horizon: time arithmetic on it (twice a window past an
/// event's time, a bucket's end) stays far inside 64-bit milliseconds.
const MAX_SPAN: Dur = Dur(3650 * 86_400_000);
const TOO_LONG: &str = "must be at most 3650d";

impl Config {
    /// Checks every rule the engine relies on; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: String, message: &str| {
            Err(Error::Config {
                field,
                message: message.to_string(),
            })
        };
        if self.signals.is_empty() {
            return bad("signals".into(), "at least one signal type is required");
        }
        if self.signals.len() > MAX_SIGNAL_TYPES {
            return bad("signals".into(), &format!("at most {MAX_SIGNAL_TYPES} signal types"));
        }
        for (i, s) in self.signals.iter().enumerate() {
            let f = |name: &str| format!("signals[{i}].{name}");
            if !valid_name(&s.name) {
                return bad(f("name"), "must be 1-64 characters of [a-z0-9_-]");
            }
            if self.signals[..i].iter().any(|o| o.name == s.name) {
                return bad(f("name"), &format!("signal type {:?} is declared twice", s.name));
            }
            if s.half_lives.len() > MAX_HALF_LIVES {
                return bad(f("half_lives"), &format!("at most {MAX_HALF_LIVES} half-lives"));
            }
            for (j, h) in s.half_lives.iter().enumerate() {
                if h.ms() < 1000 {
                    return bad(f(&format!("half_lives[{j}]")), "must be at least 1s");
                }
                if h.ms() > MAX_SPAN.ms() {
                    return bad(f(&format!("half_lives[{j}]")), TOO_LONG);
                }
                if s.half_lives[..j].contains(h) {
                    return bad(f(&format!("half_lives[{j}]")), "declared twice");
                }
            }
            if s.windows.len() > MAX_WINDOWS {
                return bad(f("windows"), &format!("at most {MAX_WINDOWS} windows"));
            }
            for (j, w) in s.windows.iter().enumerate() {
                let g = w.granularity.unwrap_or(Dur(1000));
                if w.size.ms() < 1000 {
                    return bad(f(&format!("windows[{j}].size")), "must be at least 1s");
                }
                if w.size.ms() > MAX_SPAN.ms() {
                    return bad(f(&format!("windows[{j}].size")), TOO_LONG);
                }
                if g.ms() < 1000 {
                    return bad(f(&format!("windows[{j}].granularity")), "must be at least 1s");
                }
                if w.size.ms() % g.ms() != 0 {
                    return bad(
                        f(&format!("windows[{j}].granularity")),
                        &format!("the window size {} must be a multiple of the granularity {}", w.size, g),
                    );
                }
                if s.windows[..j].iter().any(|o| o.size == w.size) {
                    return bad(f(&format!("windows[{j}].size")), "declared twice");
                }
            }
            for (name, v) in [
                ("min_weight", s.min_weight),
                ("max_weight", s.max_weight),
                ("default_weight", s.default_weight),
                ("rank_weight", s.rank_weight),
                ("polarity", s.polarity),
                ("relationship_delta", s.relationship_delta),
            ] {
                if !v.is_finite() {
                    return bad(f(name), "must be a finite number");
                }
            }
            if s.min_weight < -MAX_WEIGHT_BOUND || s.max_weight > MAX_WEIGHT_BOUND {
                return bad(
                    f("max_weight"),
                    &format!("weight bounds must lie within ±{MAX_WEIGHT_BOUND}"),
                );
            }
            if s.min_weight > s.max_weight {
                return bad(f("min_weight"), "must not exceed max_weight");
            }
            if s.default_weight < s.min_weight || s.default_weight > s.max_weight {
                return bad(f("default_weight"), "must lie within [min_weight, max_weight]");
            }
            if !is_rank_weight(s.rank_weight) {
                return bad(f("rank_weight"), RANK_WEIGHT);
            }
        }
        if !self.cluster.processes.is_empty() {
            if self.cluster.process_id >= self.cluster.processes.len() {
                return bad(
                    "cluster.process_id".into(),
                    &format!(
                        "must be below the number of processes ({})",
                        self.cluster.processes.len()
                    ),
                );
            }
            for (i, p) in self.cluster.processes.iter().enumerate() {
                for (name, addr) in [("timely", &p.timely), ("http", &p.http)] {
                    // An empty HTTP address is learned from its process as the cluster forms.
                    let learned = name == "http" && addr.is_empty();
                    if !learned && addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
                        return bad(format!("cluster.processes[{i}].{name}"), "must be host:port");
                    }
                }
            }
        }
        for (i, d) in self.cohort_dimensions.iter().enumerate() {
            if !valid_name(d) {
                return bad(
                    format!("cohort_dimensions[{i}]"),
                    "must be 1-64 characters of [a-z0-9_-]",
                );
            }
        }
        let pz = &self.personalization;
        for (name, d) in [
            ("state_horizon", pz.state_horizon),
            ("affinity_half_life", pz.affinity_half_life),
            ("half_life", pz.half_life),
            ("horizon", pz.horizon),
        ] {
            if d.ms() < 1000 {
                return bad(format!("personalization.{name}"), "must be at least 1s");
            }
            if d.ms() > MAX_SPAN.ms() {
                return bad(format!("personalization.{name}"), TOO_LONG);
            }
        }
        if pz.horizon > pz.state_horizon {
            return bad(
                "personalization.horizon".into(),
                "must not exceed personalization.state_horizon (an item key is reused only after it)",
            );
        }
        if pz.dimension > self.server.max_embedding_dim {
            return bad(
                "personalization.dimension".into(),
                &format!(
                    "must not exceed server.max_embedding_dim ({})",
                    self.server.max_embedding_dim
                ),
            );
        }
        if !pz.cold_signals.is_finite() || pz.cold_signals < 0.0 {
            return bad("personalization.cold_signals".into(), "must be a finite number ≥ 0");
        }
        for (i, c) in self.cohorts.iter().enumerate() {
            if !valid_name(&c.name) {
                return bad(format!("cohorts[{i}].name"), "must be 1-64 characters of [a-z0-9_-]");
            }
            if self.cohorts[..i].iter().any(|o| o.name == c.name) {
                return bad(format!("cohorts[{i}].name"), "declared twice");
            }
            if c.where_.is_empty() {
                return bad(format!("cohorts[{i}].where"), "must name at least one attribute");
            }
            for (k, v) in &c.where_ {
                if !self.cohort_dimensions.contains(k) {
                    return bad(format!("cohorts[{i}].where.{k}"), "is not one of cohort_dimensions");
                }
                if v.is_empty() || v.contains(',') {
                    return bad(
                        format!("cohorts[{i}].where.{k}"),
                        "must be a non-empty value without ',' (it separates cohort= pairs)",
                    );
                }
            }
        }
        for (i, p) in self.profiles.iter().enumerate() {
            let f = |name: &str| format!("profiles[{i}].{name}");
            if self.profiles[..i].iter().any(|o| o.name == p.name) {
                return bad(f("name"), "declared twice");
            }
            if !valid_name(&p.name) {
                return bad(f("name"), "must be 1-64 characters of [a-z0-9_-]");
            }
            if BUILTIN_PROFILES.contains(&p.name.as_str()) {
                return bad(f("name"), &format!("{:?} is a built-in profile", p.name));
            }
            if !["trending", "rising", "hot", "top", "new", "for_you", "following"].contains(&p.base.as_str()) {
                return bad(
                    f("base"),
                    "must be one of trending, rising, hot, top, new, for_you, following",
                );
            }
            let personal = p.base == "for_you";
            for (name, w) in [("w_text", p.w_text), ("w_profile", p.w_profile)] {
                if let Some(w) = w
                    && !is_rank_weight(w)
                {
                    return bad(f(name), RANK_WEIGHT);
                }
            }
            for (name, w) in [("w_sim", p.w_sim), ("w_pop", p.w_pop), ("w_aff", p.w_aff)] {
                if let Some(w) = w {
                    if !personal {
                        return bad(f(name), "only a for_you profile has this weight");
                    }
                    if !is_rank_weight(w) {
                        return bad(f(name), RANK_WEIGHT);
                    }
                }
            }
            if p.candidates.is_some() && !personal {
                return bad(f("candidates"), "only a for_you profile has candidates");
            }
            if let Some(c) = p.candidates
                && (c == 0 || c > MAX_CANDIDATES)
            {
                return bad(f("candidates"), &format!("must lie within 1..={MAX_CANDIDATES}"));
            }
            if p.exploration.is_some() && !personal {
                return bad(f("exploration"), "only a for_you profile has an exploration share");
            }
            if let Some(x) = p.exploration
                && !(0.0..=1.0).contains(&x)
            {
                return bad(f("exploration"), "must lie within 0..=1");
            }
            // What the base reads: a field it does not read would be ignored without a word.
            if p.window.is_some() && !base_reads_window(&p.base) {
                return bad(
                    f("window"),
                    &format!("a {} profile reads no window (trending and rising do)", p.base),
                );
            }
            if p.half_life.is_some() && !base_reads_half_life(&p.base) {
                return bad(
                    f("half_life"),
                    &format!(
                        "a {} profile reads no half-life (hot, for_you and following do)",
                        p.base
                    ),
                );
            }
            if !p.signals.is_empty() && p.base == "new" {
                return bad(f("signals"), "a new profile ranks by creation time, not by signals");
            }
            if personal && [p.w_sim, p.w_pop, p.w_aff].iter().all(|w| w.is_some_and(|w| w == 0.0)) {
                return bad(f("w_sim"), "w_sim, w_pop and w_aff are all 0: every item would score 0");
            }
            if let Some(c) = &p.cohort {
                if !["trending", "rising"].contains(&p.base.as_str()) {
                    return bad(
                        f("cohort"),
                        "cohort counts are window counts: only trending and rising have them",
                    );
                }
                let declared = self.cohorts.iter().any(|d| d.name == *c);
                if !declared {
                    for part in c.split(',') {
                        let Some((d, v)) = part.split_once(':') else {
                            return bad(
                                f("cohort"),
                                &format!("{part:?} is neither dimension:value nor a cohort declared in [[cohorts]]"),
                            );
                        };
                        if !self.cohort_dimensions.iter().any(|x| x == d) {
                            return bad(f("cohort"), &format!("{d:?} is not one of cohort_dimensions"));
                        }
                        if v.is_empty() {
                            return bad(f("cohort"), &format!("empty value for {d:?}"));
                        }
                    }
                }
            }
            if let Some(x) = &p.filter
                && x != "unseen"
                && x != "all"
            {
                return bad(f("filter"), "must be unseen or all");
            }
            for (name, v) in [("category", &p.category), ("creator", &p.creator), ("tag", &p.tag)] {
                if v.as_deref()
                    .is_some_and(|v| v.is_empty() || v.len() > self.server.max_id_bytes)
                {
                    return bad(
                        f(name),
                        &format!("must be 1 to {} bytes (server.max_id_bytes)", self.server.max_id_bytes),
                    );
                }
            }
            for (term, name) in &p.transforms {
                let field = f(&format!("transforms.{term}"));
                if !super::TRANSFORM_TERMS.contains(&term.as_str()) {
                    return bad(field, "is not a score term (sim, pop, aff, text, profile)");
                }
                if !personal && super::FOR_YOU_TERMS.contains(&term.as_str()) {
                    return bad(field, "only a for_you profile has this term");
                }
                if super::Transform::parse(name).is_none() {
                    return bad(field, "must be linear, log1p or sqrt");
                }
            }
            if p.exclude.iter().any(|v| v.is_empty()) {
                return bad(f("exclude"), "must not hold an empty id");
            }
            for (name, w) in &p.signals {
                if self.signal(name).is_none() {
                    return bad(f(&format!("signals.{name}")), "is not a declared signal type");
                }
                if !is_rank_weight(*w) {
                    return bad(f(&format!("signals.{name}")), RANK_WEIGHT);
                }
            }
            // The window and half-life must be declared by every signal type the profile
            // ranks by: its own `signals`, else the schema's blend (every query would be a
            // 400 otherwise).
            let blend: Vec<&super::SignalType> = if p.signals.is_empty() {
                self.signals.iter().filter(|s| s.rank_weight > 0.0).collect()
            } else {
                p.signals
                    .iter()
                    .filter(|(_, w)| **w > 0.0)
                    .filter_map(|(name, _)| self.signal(name))
                    .collect()
            };
            for st in blend {
                let name = &st.name;
                if let Some(win) = p.window
                    && !st.windows.iter().any(|x| x.size == win)
                {
                    return bad(f("window"), &format!("signal type {name:?} declares no window {win}"));
                }
                if let Some(h) = p.half_life
                    && !st.half_lives.contains(&h)
                {
                    return bad(
                        f("half_life"),
                        &format!("signal type {name:?} declares no half-life {h}"),
                    );
                }
            }
        }
        let e = &self.engine;
        if e.workers == 0 || e.workers > 256 {
            return bad("engine.workers".into(), "must be between 1 and 256");
        }
        if e.group_commit_max_records == 0 {
            return bad("engine.group_commit_max_records".into(), "must be at least 1");
        }
        if e.segment_bytes < 4096 {
            return bad("engine.segment_bytes".into(), "must be at least 4096");
        }
        if e.max_clock_jump.ms() == 0 {
            return bad("engine.max_clock_jump".into(), "must be positive");
        }
        if e.wal_queue_requests == 0 {
            return bad("engine.wal_queue_requests".into(), "must be at least 1");
        }
        if e.max_lag_signals == 0 {
            return bad("engine.max_lag_signals".into(), "must be at least 1");
        }
        if e.tick_ms == 0 {
            return bad("engine.tick_ms".into(), "must be at least 1");
        }
        if e.data_dir.is_empty() {
            return bad("engine.data_dir".into(), "must not be empty");
        }
        let s = &self.server;
        if s.listen.parse::<SocketAddr>().is_err() {
            return bad("server.listen".into(), "must be an address like 127.0.0.1:7700");
        }
        if s.body_limit_bytes < 1024 {
            return bad("server.body_limit_bytes".into(), "must be at least 1024");
        }
        if s.max_records_per_request == 0 {
            return bad("server.max_records_per_request".into(), "must be at least 1");
        }
        if s.max_id_bytes == 0 || s.max_id_bytes > 4096 {
            return bad("server.max_id_bytes".into(), "must be between 1 and 4096");
        }
        if s.header_timeout_ms < 100 {
            return bad("server.header_timeout_ms".into(), "must be at least 100");
        }
        if s.max_connections == 0 || s.max_connections > 1_000_000 {
            return bad("server.max_connections".into(), "must be between 1 and 1000000");
        }
        if s.auth_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty() || t.trim() != t)
        {
            return bad(
                "server.auth_token".into(),
                "(or TIDAL_AUTH_TOKEN) must not be blank or begin or end with whitespace: no request could present it",
            );
        }
        Ok(())
    }
}

/// A declared name (signal type, cohort, profile): 1-64 characters of `[a-z0-9_-]`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether a ranking on `base` reads a window (`window=`, a profile's `window`).
pub fn base_reads_window(base: &str) -> bool {
    matches!(base, "trending" | "rising")
}

/// Whether a ranking on `base` reads a half-life (`half_life=`, a profile's `half_life`).
pub fn base_reads_half_life(base: &str) -> bool {
    matches!(base, "hot" | "for_you" | "following")
}
