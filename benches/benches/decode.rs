//! Decoding one 10,000-call page, JSON and XML, as the client does.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use plumline_api::{CallQuery, WireFormat, wire};
use plumline_sim::{SimConfig, Simulator};

const CALLS: u32 = 10_000;

fn page_body(format: WireFormat, quirks: bool) -> Vec<u8> {
    let sim = Simulator::new(SimConfig::default().with_quirks(quirks)).expect("simulator");
    let (start, end) = (sim.config().data_start, sim.config().data_end - 1);
    let request = CallQuery::new(start, end).expect("query").page(CALLS, 0).expect("page");
    let mut body = Vec::new();
    let n = sim.render_page(&request, format, &mut body);
    assert_eq!(n, CALLS as usize);
    body
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_page");
    group.throughput(Throughput::Elements(u64::from(CALLS)));
    for (name, format, quirks) in [
        ("json", WireFormat::Json, false),
        ("json_quirks", WireFormat::Json, true),
        ("xml", WireFormat::Xml, false),
    ] {
        let body = page_body(format, quirks);
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| wire::decode_page(black_box(body), format).expect("decodes"));
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
