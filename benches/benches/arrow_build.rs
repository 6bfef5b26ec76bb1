//! Building the lake's `RecordBatch` from one 10,000-call page.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plumline_api::CallQuery;
use plumline_export::calls_to_batch;
use plumline_sim::{SimConfig, Simulator};

fn arrow_build(c: &mut Criterion) {
    let sim = Simulator::new(SimConfig::default()).expect("simulator");
    let (start, end) = (sim.config().data_start, sim.config().data_end - 1);
    let page = sim.page(&CallQuery::new(start, end).expect("query").page(10_000, 0).expect("page"));
    let mut group = c.benchmark_group("arrow_build");
    group.throughput(Throughput::Elements(page.calls.len() as u64));
    group.bench_function("calls_to_batch_10k", |b| {
        b.iter(|| calls_to_batch(black_box(&page.calls), Some("6175551234")).expect("batch"));
    });
    group.finish();
}

criterion_group!(benches, arrow_build);
criterion_main!(benches);
