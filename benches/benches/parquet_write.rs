//! Encoding 100,000 calls (ten 10,000-row batches) into one Parquet file
//! with the lake's writer settings (zstd-1, page statistics, no dictionary
//! for `session_id`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plumline_api::CallQuery;
use plumline_export::{ParquetOptions, calls_to_batch, write_parquet_to_vec};
use plumline_sim::{SimConfig, Simulator};

fn parquet_write(c: &mut Criterion) {
    let sim = Simulator::new(SimConfig::default().with_calls_per_day(2_000.0)).expect("simulator");
    let (start, end) = (sim.config().data_start, sim.config().data_end - 1);
    let query = CallQuery::new(start, end).expect("query");
    let batches: Vec<_> = (0..10u64)
        .map(|k| {
            let page = sim.page(&query.page(10_000, k * 10_000).expect("page"));
            calls_to_batch(&page.calls, None).expect("batch")
        })
        .collect();
    let rows: usize = batches.iter().fold(0, |n, b| n + b.num_rows());
    let options = ParquetOptions::default();
    let size = write_parquet_to_vec(&batches, &options).expect("encodes").len();
    let mut group = c.benchmark_group("parquet_write");
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function(format!("zstd1_100k_rows_{}B_per_row", size / rows), |b| {
        b.iter(|| write_parquet_to_vec(black_box(&batches), &options).expect("encodes"));
    });
    group.finish();
}

criterion_group!(benches, parquet_write);
criterion_main!(benches);
