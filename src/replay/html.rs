//! The HTML report: one self-contained file (no scripts, fonts or images from the network),
//! charts drawn here as inline SVG. Per query: the measures against the baseline over time,
//! a bump chart of the top items' ranks (over time per variant, or across variants when
//! there is one clock), and the rankings as tables.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::clock::format_clock;
use super::metrics::RBO_P;
use super::report::{ReplayReport, ResultRow};

/// Ranks a bump chart shows.
const DEPTH: usize = 10;
/// Items a bump chart follows.
const TRACKED: usize = 12;
/// Rows of the ranking tables.
const TABLE_ROWS: usize = 20;

const PALETTE: [&str; 12] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
    "#1f77b4", "#8c564b",
];

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;\
max-width:1100px;padding:0 1rem;color:#222}h1{margin-bottom:.2rem}h2{margin-top:2.5rem;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}td,th{border:1px solid #ddd;padding:.2rem .5rem;\
text-align:left;vertical-align:top}th{background:#f5f5f5}.num{text-align:right;font-variant-numeric:tabular-nums}\
.enter{background:#e6f4ea}.leave{color:#a33}.muted{color:#777}svg{display:block;margin:.5rem 0}\
code{background:#f3f3f3;padding:0 .25rem}.charts{display:flex;flex-wrap:wrap;gap:1rem}details{margin:.3rem 0}";

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A short clock label: `2024-05-01 12:00`.
fn short_clock(ms: u64) -> String {
    let s = format_clock(ms);
    s.get(..16).unwrap_or(&s).replace('T', " ")
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.3}"))
}

/// Renders the whole report.
pub fn render(report: &ReplayReport) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tidal replay report</title>\
         <style>{STYLE}</style></head><body><h1>tidal replay</h1><p class=\"muted\">WAL <code>{}</code> — {}</p>",
        esc(&report.wal),
        esc(&report.headline())
    );
    h.push_str("<table><tr><th>variant</th><th>configuration</th></tr>");
    for (i, v) in report.variants.iter().enumerate() {
        let role = if i == 0 { " (baseline)" } else { "" };
        let _ = write!(h, "<tr><td>{}{role}</td><td>{}</td></tr>", esc(&v.name), esc(&v.origin));
    }
    h.push_str("</table>");
    if let Some(t) = &report.torn_tail {
        let _ = write!(
            h,
            "<p><b>The log ends in a torn record</b> at <code>{}</code> offset {}; the replay stopped at the last \
             whole record.</p>",
            esc(&t.file),
            t.offset
        );
    }
    for w in &report.warnings {
        let _ = write!(h, "<p><b>Warning:</b> {}</p>", esc(w));
    }
    definitions(&mut h);
    for q in &report.queries {
        query_section(&mut h, report, q);
    }
    h.push_str("</body></html>\n");
    h
}

fn definitions(h: &mut String) {
    let _ = write!(
        h,
        "<h2>How to read this report</h2><p>Every variant ran the same dataflow over the same log; at each clock \
         <i>T</i> its ranking is the one the server would have answered at clock <i>T</i> with that configuration. \
         The first variant is the baseline (the log's own configuration). A = baseline ranking, B = variant \
         ranking, k = max(|A|, |B|).</p><ul>\
         <li><b>overlap@k</b> = |A ∩ B| / k: the share of items both list, order ignored (1 = same items, \
         0 = none in common).</li>\
         <li><b>Kendall τ</b> (τ-b over A ∪ B): each item takes its position in each list; an item a list lacks \
         is tied after that list's last item. τ = (C − D) / √((n₀ − n₁)(n₀ − n₂)), with C / D the concordant / \
         discordant pairs and n₁, n₂ the pairs tied in A, in B. 1 = same order, −1 = reversed; two disjoint \
         lists of k items give −2k/(3k−1); n/a when a list ties every pair (an empty list).</li>\
         <li><b>RBO</b> (rank-biased overlap, extrapolated, p = {RBO_P}): Σ over depths d of the overlap share \
         |A[..d] ∩ B[..d]| / d weighted by (1 − p)·p<sup>d−1</sup>, extrapolated past the lists' ends \
         (Webber, Moffat &amp; Zobel 2010). Top ranks weigh most: with p = 0.9 the first 10 carry ~86 %. \
         1 = identical, 0 = disjoint.</li>\
         <li><b>entering</b> / <b>leaving</b>: items B lists and A does not / A lists and B does not \
         (highlighted green in the tables / listed in red).</li></ul>"
    );
}

fn query_section(h: &mut String, report: &ReplayReport, q: &str) {
    let rows: Vec<&ResultRow> = report.results.iter().filter(|r| r.query == q).collect();
    let _ = write!(h, "<h2>Query <code>{}</code></h2>", esc(q));
    let times = &report.times;
    let names: Vec<&str> = report.variants.iter().map(|v| v.name.as_str()).collect();
    let row = |v: &str, t: u64| rows.iter().find(|r| r.variant == v && r.at == t).copied();
    if names.len() > 1 {
        h.push_str("<h3>Against the baseline</h3><div class=\"charts\">");
        type Metric = fn(&ResultRow) -> Option<f64>;
        let metrics: [(&str, f64, Metric); 3] = [
            ("overlap@k", 0.0, |r| r.vs_baseline.as_ref().map(|c| c.overlap_at_k)),
            ("Kendall τ", -1.0, |r| {
                r.vs_baseline.as_ref().and_then(|c| c.kendall_tau)
            }),
            ("RBO", 0.0, |r| r.vs_baseline.as_ref().map(|c| c.rbo)),
        ];
        for (title, y_min, f) in metrics {
            let series: Vec<(String, &str, Vec<Option<f64>>)> = names[1..]
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let ys = times.iter().map(|&t| row(v, t).and_then(f)).collect();
                    (v.to_string(), PALETTE[i % PALETTE.len()], ys)
                })
                .collect();
            line_chart(h, title, times, &series, y_min, 1.0);
        }
        h.push_str("</div>");
    }
    // Colours follow items across every chart of this query.
    let colors = tracked_items(&rows);
    if times.len() > 1 {
        h.push_str("<h3>Rank movement of the top items over time</h3>");
        let labels: Vec<String> = times.iter().map(|&t| short_clock(t)).collect();
        for v in &names {
            let columns: Vec<Vec<&str>> = times
                .iter()
                .map(|&t| {
                    row(v, t)
                        .map(|r| r.items.iter().map(|i| i.id.as_str()).collect())
                        .unwrap_or_default()
                })
                .collect();
            let _ = write!(h, "<p><b>{}</b></p>", esc(v));
            bump_chart(h, &labels, &columns, &colors);
        }
    } else if let Some(&t) = times.first() {
        h.push_str("<h3>Rank movement of the top items across variants</h3>");
        let labels: Vec<String> = names.iter().map(|v| v.to_string()).collect();
        let columns: Vec<Vec<&str>> = names
            .iter()
            .map(|v| {
                row(v, t)
                    .map(|r| r.items.iter().map(|i| i.id.as_str()).collect())
                    .unwrap_or_default()
            })
            .collect();
        bump_chart(h, &labels, &columns, &colors);
    }
    h.push_str("<h3>Rankings</h3>");
    for (i, &t) in times.iter().enumerate().rev() {
        let last = i + 1 == times.len();
        let _ = write!(
            h,
            "<details{}><summary>at {} <span class=\"muted\">({t})</span></summary>",
            if last { " open" } else { "" },
            esc(&format_clock(t))
        );
        let at_t: Vec<&ResultRow> = names.iter().filter_map(|v| row(v, t)).collect();
        ranking_table(h, &at_t);
        h.push_str("</details>");
    }
}

/// The items the bump charts follow, with their colours: the most often and highest ranked
/// within the chart depth across all rows of the query.
fn tracked_items(rows: &[&ResultRow]) -> HashMap<String, &'static str> {
    let mut weight: HashMap<&str, (usize, usize)> = HashMap::new();
    for r in rows {
        for (pos, item) in r.items.iter().take(DEPTH).enumerate() {
            let e = weight.entry(item.id.as_str()).or_default();
            e.0 += 1;
            e.1 += DEPTH - pos;
        }
    }
    let mut items: Vec<(&str, (usize, usize))> = weight.into_iter().collect();
    items.sort_by(|a, b| (b.1.1, b.1.0).cmp(&(a.1.1, a.1.0)).then(a.0.cmp(b.0)));
    items
        .into_iter()
        .take(TRACKED)
        .enumerate()
        .map(|(i, (id, _))| (id.to_string(), PALETTE[i % PALETTE.len()]))
        .collect()
}

fn ranking_table(h: &mut String, rows: &[&ResultRow]) {
    h.push_str("<table><tr><th>#</th>");
    for r in rows {
        match &r.vs_baseline {
            Some(c) => {
                let _ = write!(
                    h,
                    "<th>{}<br><span class=\"muted\">overlap@{} {:.3} · τ {} · RBO {:.3}</span></th>",
                    esc(&r.variant),
                    c.k,
                    c.overlap_at_k,
                    fmt_opt(c.kendall_tau),
                    c.rbo
                );
            }
            None => {
                let _ = write!(h, "<th>{}</th>", esc(&r.variant));
            }
        }
    }
    h.push_str("</tr>");
    if rows.iter().any(|r| r.error.is_some()) {
        h.push_str("<tr><td></td>");
        for r in rows {
            let _ = write!(
                h,
                "<td class=\"leave\">{}</td>",
                r.error
                    .as_deref()
                    .map(|e| format!("not answered: {}", esc(e)))
                    .unwrap_or_default()
            );
        }
        h.push_str("</tr>");
    }
    let depth = rows.iter().map(|r| r.items.len()).max().unwrap_or(0).min(TABLE_ROWS);
    for i in 0..depth {
        let _ = write!(h, "<tr><td class=\"num\">{}</td>", i + 1);
        for r in rows {
            match r.items.get(i) {
                Some(item) => {
                    let class = if r.entering.contains(&item.id) {
                        " class=\"enter\""
                    } else {
                        ""
                    };
                    let _ = write!(
                        h,
                        "<td{class}>{} <span class=\"muted\">{:.4}</span></td>",
                        esc(&item.id),
                        item.score
                    );
                }
                None => h.push_str("<td></td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("<tr><td></td>");
    for r in rows {
        let leaving: Vec<String> = r.leaving.iter().map(|s| esc(s)).collect();
        let _ = write!(
            h,
            "<td class=\"leave\">{}</td>",
            if leaving.is_empty() {
                String::new()
            } else {
                format!("leaving: {}", leaving.join(", "))
            }
        );
    }
    h.push_str("</tr></table>");
}

/// A line chart of values in `[y_min, y_max]` over clocks `times` (one point: centred).
fn line_chart(
    h: &mut String,
    title: &str,
    times: &[u64],
    series: &[(String, &str, Vec<Option<f64>>)],
    y_min: f64,
    y_max: f64,
) {
    let (w, ht, left, right, top, bottom) = (340.0, 200.0, 40.0, 10.0, 24.0, 34.0);
    let (pw, ph) = (w - left - right, ht - top - bottom);
    let (t0, t1) = (times.first().copied().unwrap_or(0), times.last().copied().unwrap_or(0));
    let x = |t: u64| {
        if t1 > t0 {
            left + pw * (t - t0) as f64 / (t1 - t0) as f64
        } else {
            left + pw / 2.0
        }
    };
    let y = |v: f64| top + ph * (y_max - v.clamp(y_min, y_max)) / (y_max - y_min);
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" \
         font-size=\"11\"><text x=\"{left}\" y=\"14\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    for k in 0..=4 {
        let v = y_min + (y_max - y_min) * k as f64 / 4.0;
        let yy = y(v);
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#666\">{v:.2}</text>",
            left + pw,
            left - 4.0,
            yy + 4.0
        );
    }
    let base = ht - bottom + 14.0;
    let _ = write!(
        h,
        "<text x=\"{left}\" y=\"{base}\" fill=\"#666\">{}</text>",
        esc(&short_clock(t0))
    );
    if t1 > t0 {
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{base}\" text-anchor=\"end\" fill=\"#666\">{}</text>",
            left + pw,
            esc(&short_clock(t1))
        );
    }
    for (i, (name, color, ys)) in series.iter().enumerate() {
        let mut path = String::new();
        let mut pen_down = false;
        for (&t, v) in times.iter().zip(ys) {
            match v {
                Some(v) => {
                    let _ = write!(path, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, x(t), y(*v));
                    pen_down = true;
                    let _ = write!(
                        h,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"><title>{}: {v:.3} at {}</title></circle>",
                        x(t),
                        y(*v),
                        esc(name),
                        esc(&short_clock(t))
                    );
                }
                None => pen_down = false,
            }
        }
        if !path.is_empty() {
            let _ = write!(
                h,
                "<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>"
            );
        }
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            left + 8.0 + 90.0 * i as f64,
            ht - 4.0,
            esc(name)
        );
    }
    h.push_str("</svg>");
}

/// A bump chart: one column per label, rank 1 at the top; a followed item is a coloured
/// line through its ranks, broken where it is below the chart's depth.
fn bump_chart(h: &mut String, labels: &[String], columns: &[Vec<&str>], colors: &HashMap<String, &'static str>) {
    let depth = columns.iter().map(Vec::len).max().unwrap_or(0).min(DEPTH);
    if depth == 0 || columns.is_empty() {
        h.push_str("<p class=\"muted\">No items ranked.</p>");
        return;
    }
    let (left, right, top, bottom, row_h) = (36.0, 150.0, 16.0, 40.0, 26.0);
    let plot_w = (90.0 * columns.len() as f64).clamp(200.0, 900.0);
    let (w, ht) = (left + plot_w + right, top + row_h * (depth as f64 - 1.0) + bottom);
    let x = |c: usize| {
        if columns.len() > 1 {
            left + plot_w * c as f64 / (columns.len() - 1) as f64
        } else {
            left + plot_w / 2.0
        }
    };
    let y = |rank: usize| top + row_h * (rank as f64 - 1.0);
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{ht:.0}\" viewBox=\"0 0 {w:.0} {ht:.0}\" \
         font-size=\"11\">"
    );
    for r in 1..=depth {
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#f0f0f0\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#666\">{r}</text>",
            left + plot_w,
            y(r),
            y(r),
            left - 10.0,
            y(r) + 4.0
        );
    }
    // Label every column when few, else about eight of them.
    let step = columns.len().div_ceil(8).max(1);
    for (c, label) in labels.iter().enumerate() {
        let last = labels.len() - 1;
        if c == last || (c % step == 0 && last - c >= step) {
            let anchor = if columns.len() == 1 {
                "middle"
            } else if c == 0 {
                "start"
            } else if c + 1 == labels.len() {
                "end"
            } else {
                "middle"
            };
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"#666\">{}</text>",
                x(c),
                ht - 16.0,
                esc(label)
            );
        }
    }
    let mut followed: Vec<(&String, &&str)> = colors.iter().collect();
    followed.sort();
    for (id, color) in followed {
        let ranks: Vec<Option<usize>> = columns
            .iter()
            .map(|col| col.iter().take(depth).position(|x| *x == id.as_str()).map(|p| p + 1))
            .collect();
        let mut path = String::new();
        let mut prev: Option<usize> = None;
        for (c, r) in ranks.iter().enumerate() {
            if let Some(r) = r {
                let _ = write!(
                    path,
                    "{}{:.1},{:.1} ",
                    if prev.is_some() { "L" } else { "M" },
                    x(c),
                    y(*r)
                );
            }
            prev = *r;
        }
        if !path.is_empty() {
            let _ = write!(
                h,
                "<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2.5\" opacity=\"0.85\"/>"
            );
        }
        for (c, r) in ranks.iter().enumerate() {
            if let Some(r) = r {
                let _ = write!(
                    h,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"><title>{} #{r} · {}</title></circle>",
                    x(c),
                    y(*r),
                    esc(id),
                    esc(&labels[c])
                );
            }
        }
        // The item's name where it last appears.
        if let Some((c, Some(r))) = ranks.iter().enumerate().rev().find(|(_, r)| r.is_some()) {
            let label: String = id.chars().take(22).collect();
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text>",
                x(c) + 8.0,
                y(*r) + 4.0,
                esc(&label)
            );
        }
    }
    h.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::metrics::Comparison;
    use crate::replay::report::{AsOf, ItemScore, VariantInfo};

    fn row(variant: &str, at: u64, ids: &[&str], base: &[&str]) -> ResultRow {
        ResultRow {
            variant: variant.into(),
            at,
            at_rfc3339: format_clock(at),
            query: "profile=hot".into(),
            as_of: AsOf { clock: at, lsn: 1 },
            items: ids
                .iter()
                .enumerate()
                .map(|(i, id)| ItemScore {
                    id: id.to_string(),
                    score: 10.0 - i as f64,
                    rank: i + 1,
                })
                .collect(),
            error: None,
            vs_baseline: Some(Comparison::between(base, ids)),
            entering: crate::replay::metrics::entering(base, ids),
            leaving: crate::replay::metrics::entering(ids, base),
        }
    }

    #[test]
    fn renders_escaped_self_contained_html() {
        let base1 = ["a", "b", "<script>"];
        let base2 = ["b", "a", "c"];
        let report = ReplayReport {
            wal: "/tmp/w&al".into(),
            variants: vec![
                VariantInfo {
                    name: "baseline".into(),
                    origin: "WAL".into(),
                },
                VariantInfo {
                    name: "short".into(),
                    origin: "short.toml".into(),
                },
            ],
            queries: vec!["profile=hot".into()],
            times: vec![1_000, 2_000],
            results: vec![
                row("baseline", 1_000, &base1, &base1),
                row("short", 1_000, &["b", "a", "d"], &base1),
                row("baseline", 2_000, &base2, &base2),
                row("short", 2_000, &["c", "b"], &base2),
            ],
            events: 10,
            records: 3,
            batches: 2,
            events_per_s: 5.0,
            elapsed_s: 2.0,
            first_clock: Some(1_000),
            last_clock: Some(2_000),
            torn_tail: None,
            warnings: vec![],
        };
        let html = render(&report);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script>"), "unescaped id");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("/tmp/w&amp;al"));
        assert!(!html.contains("src=\"http"), "no network resources");
        assert_eq!(
            html.matches("<svg").count(),
            3 + 2,
            "3 measure charts + a bump chart per variant"
        );
        assert!(html.contains("Kendall"));
    }
}
