//! End-to-end export figures: calls/s and peak RSS against the in-process
//! simulator, one child process per scenario (so each peak RSS is its own).
//!
//! `cargo xtask bench` runs this in release mode. `--scenario N` runs one
//! scenario in this process and prints one tab-separated line.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a bench report")]

use std::process::{Command, ExitCode};
use std::time::Duration;

use benches::{Scenario, peak_rss_bytes, run_export, start_sim};

// The system allocator: with mimalloc's default purge delay the peak RSS of
// this workload roughly triples (see benches/README.md).

const RSS_LIMIT: u64 = 300 * 1024 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--scenario").and_then(|i| args.get(i + 1)) {
        Some(index) => {
            if let Some(scenario) = index.parse::<usize>().ok().and_then(|i| Scenario::all().get(i).cloned())
            {
                run_one(&scenario)
            } else {
                eprintln!("error: --scenario takes 0..{}", Scenario::all().len());
                ExitCode::FAILURE
            }
        }
        None => run_all(&args[0]),
    }
}

fn run_one(scenario: &Scenario) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let measured = runtime.block_on(async {
        let server = start_sim(scenario).await;
        if std::env::var_os("PLUMLINE_BENCH_DEBUG").is_some() {
            eprintln!("after simulator start: peak RSS {} MB", peak_rss_bytes().unwrap_or(0) >> 20);
            let (start, end) = scenario.range();
            let mut day = start;
            while day < end {
                drop(server.simulator().calls_in(day, day + benches::DAY - 1, None));
                day += benches::DAY;
            }
            eprintln!("after generating every day: peak RSS {} MB", peak_rss_bytes().unwrap_or(0) >> 20);
        }
        let measured = if std::env::var_os("PLUMLINE_BENCH_DIRECT").is_some() {
            benches::run_export_direct(scenario, server.simulator(), dir.path()).await
        } else {
            run_export(scenario, &server, dir.path()).await
        };
        server.shutdown().await;
        measured
    });
    let s = &measured.summary;
    println!(
        "{}\t{}\t{}\t{:.3}\t{:.0}\t{}\t{:.3}\t{}\t{}\t{}",
        scenario.name,
        s.calls,
        s.pages,
        s.elapsed.as_secs_f64(),
        s.calls_per_sec(),
        peak_rss_bytes().unwrap_or(0),
        measured.ideal.as_secs_f64(),
        s.bytes,
        measured.requests,
        measured.min_requests
    );
    ExitCode::SUCCESS
}

fn run_all(me: &str) -> ExitCode {
    println!(
        "{:<36} {:>9} {:>6} {:>13} {:>8} {:>11} {:>9} {:>9}  target",
        "scenario", "calls", "pages", "requests/min", "secs", "calls/s", "peak RSS", "MB out"
    );
    let mut ok = true;
    for (i, scenario) in Scenario::all().iter().enumerate() {
        let out = match Command::new(me).args(["--scenario", &i.to_string()]).output() {
            Ok(out) if out.status.success() => out,
            Ok(out) => {
                eprintln!("scenario {} failed:\n{}", scenario.name, String::from_utf8_lossy(&out.stderr));
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("cannot run {me}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.trim().split('\t').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let (secs, rate, rss, ideal) = (num(3), num(4), num(5), num(6));
        let count = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (requests, min_requests) = (count(8), count(9));
        // A static source: at most 2% + 1 per day over ceil(total / page).
        let budget = scenario.request_budget(min_requests);
        let within_budget = requests <= budget;
        ok &= within_budget;
        let verdict = if scenario.latency > Duration::ZERO {
            let ratio = secs / ideal.max(1e-9);
            let pass = ratio <= 1.15;
            ok &= pass;
            format!("{ratio:.2}x of {ideal:.2}s ideal (<= 1.15x): {}", if pass { "ok" } else { "MISSED" })
        } else {
            let pass = rate >= 500_000.0 && rss < RSS_LIMIT as f64;
            ok &= pass;
            format!(">= 500k calls/s, RSS < 300 MB: {}", if pass { "ok" } else { "MISSED" })
        };
        let verdict =
            format!("{verdict}; requests <= {budget}: {}", if within_budget { "ok" } else { "MISSED" });
        println!(
            "{:<36} {:>9} {:>6} {:>13} {:>8.2} {:>11.0} {:>7.0}MB {:>9.1}  {verdict}",
            scenario.name,
            f.get(1).unwrap_or(&"?"),
            f.get(2).unwrap_or(&"?"),
            format!("{requests}/{min_requests}"),
            secs,
            rate,
            rss / 1_048_576.0,
            num(7) / 1_048_576.0
        );
    }
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model()
    );
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
