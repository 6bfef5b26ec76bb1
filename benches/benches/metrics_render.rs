//! Scrape render of the exporter's registry: 1,000 numbers x 3 directions,
//! each with a counter and a 15-bucket histogram (plus the exporter's own
//! health and process metrics), as `GET /metrics` renders it.
//!
//! Target: under 20 ms per scrape.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plumline_metrics::Metrics;

const NUMBERS: usize = 1_000;
const DIRECTIONS: [&str; 3] = ["inbound", "outbound", "transfer"];

/// Resident set size from /proc (Linux), in bytes.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn fixture() -> Metrics {
    let metrics = Metrics::new().expect("metrics");
    metrics.publish_calls(0);
    for n in 0..NUMBERS {
        let number = format!("617555{n:04}");
        for (d, direction) in DIRECTIONS.iter().enumerate() {
            // Spread durations over every bucket so no histogram is trivial.
            for i in 0..20_i64 {
                let n = i64::try_from(n).expect("small");
                let d = i64::try_from(d).expect("small");
                metrics.record_call(&number, direction, (i * 197 + n * 31 + d * 7) % 4_000);
            }
        }
    }
    metrics
}

fn metrics_render(c: &mut Criterion) {
    let before = rss_bytes();
    let metrics = fixture();
    let after = rss_bytes();
    let body = metrics.render().expect("render");
    #[allow(clippy::print_stderr, reason = "a bench reports its fixture's size once, outside the timed loop")]
    {
        eprintln!(
            "metrics_render: {} series, scrape body {} KiB, registry RSS growth ~{} KiB",
            NUMBERS * DIRECTIONS.len(),
            body.len() / 1024,
            before.zip(after).map_or(0, |(b, a)| a.saturating_sub(b) / 1024),
        );
    }

    let mut group = c.benchmark_group("metrics_render");
    group.throughput(Throughput::Elements((NUMBERS * DIRECTIONS.len()) as u64));
    group.sample_size(30);
    group.bench_function("render_1000_numbers_x_3_directions", |b| {
        b.iter(|| black_box(metrics.render().expect("render")));
    });
    group.finish();
}

criterion_group!(benches, metrics_render);
criterion_main!(benches);
