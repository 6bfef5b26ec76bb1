//! The whole pipeline against the in-process simulator over HTTP: 1,000,000
//! calls with no latency, and 300 pages at 100 ms with 16 in flight.
//!
//! `cargo xtask bench` (the `export-e2e` binary) prints the same scenarios
//! with peak RSS; this is the Criterion view.

use std::time::Duration;

use benches::{Scenario, run_export, start_sim};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

// The system allocator: with mimalloc's default purge delay the peak RSS of
// this workload roughly triples (see benches/README.md).

fn export_e2e(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("export_e2e");
    group.sample_size(10).measurement_time(Duration::from_secs(30)).warm_up_time(Duration::from_secs(1));
    for scenario in [Scenario::throughput(), Scenario::latency_bound()] {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = runtime.block_on(start_sim(&scenario));
        let (start, end) = scenario.range();
        group.throughput(Throughput::Elements(server.simulator().count_in(start, end - 1, None)));
        group.bench_function(scenario.name, |b| {
            b.to_async(&runtime).iter(|| run_export(&scenario, &server, dir.path()));
        });
        runtime.block_on(server.shutdown());
    }
    group.finish();
}

criterion_group!(benches, export_e2e);
criterion_main!(benches);
