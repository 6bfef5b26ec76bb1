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

/// Peak RSS allowed in the memory scenarios (issue: flat in days and their size).
const MEMORY_RSS_LIMIT: u64 = 150 * 1024 * 1024;

fn main() -> ExitCode {
    tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    if let Some(index) = args.iter().position(|a| a == "--serve").and_then(|i| args.get(i + 1)) {
        return serve(index);
    }
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

/// `--serve N`: the simulator of scenario N on 127.0.0.1; prints its base
/// URL and the scenario's minimum requests, then serves until stdin closes.
fn serve(index: &str) -> ExitCode {
    let Some(scenario) = index.parse::<usize>().ok().and_then(|i| Scenario::all().get(i).cloned()) else {
        return ExitCode::FAILURE;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let server = start_sim(&scenario).await;
        println!("{}\t{}", server.base_url(), scenario.min_requests(server.simulator()));
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let _ = tokio::task::spawn_blocking(|| {
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
        })
        .await;
        server.shutdown().await;
    });
    ExitCode::SUCCESS
}

/// A simulator in a child process (`--serve`), killed on drop.
struct SimApart {
    child: std::process::Child,
    base_url: String,
    min_requests: u64,
}

impl SimApart {
    fn start(index: usize) -> SimApart {
        let me = std::env::current_exe().expect("own path");
        let mut child = Command::new(me)
            .args(["--serve", &index.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the simulator process");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("base url");
        let (base_url, min) = line.trim().split_once('\t').expect("url and minimum");
        SimApart { base_url: base_url.to_owned(), min_requests: min.parse().expect("minimum"), child }
    }
}

impl Drop for SimApart {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn run_one(scenario: &Scenario) -> ExitCode {
    let moto = if scenario.s3 {
        let Some(moto) = benches::Moto::start() else {
            println!("{}\tskipped: set PLUMLINE_BENCH_PYTHON to a Python with moto", scenario.name);
            return ExitCode::SUCCESS;
        };
        Some(moto)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    if scenario.sim_apart {
        let index = Scenario::all().iter().position(|s| s.name == scenario.name).unwrap_or(0);
        let sim = SimApart::start(index);
        let lake =
            moto.as_ref().map_or_else(|| plumline_export::Lake::local(dir.path()), benches::Moto::lake);
        let measured =
            runtime.block_on(benches::run_export_at(scenario, &sim.base_url, lake, sim.min_requests));
        drop(sim);
        return report(scenario, &measured);
    }
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
        } else if let Some(moto) = &moto {
            benches::run_export_into(scenario, &server, moto.lake()).await
        } else {
            run_export(scenario, &server, dir.path()).await
        };
        server.shutdown().await;
        measured
    });
    report(scenario, &measured)
}

fn report(scenario: &Scenario, measured: &benches::Measured) -> ExitCode {
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
        if f.get(1).is_some_and(|v| v.starts_with("skipped")) {
            println!("{:<36} {}", scenario.name, f[1]);
            continue;
        }
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
        } else if scenario.data_days.is_some() || scenario.s3 || scenario.name.starts_with("memory") {
            let pass = rss < MEMORY_RSS_LIMIT as f64;
            ok &= pass;
            format!("RSS < 150 MB: {}", if pass { "ok" } else { "MISSED" })
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

/// The allocator setting the CLI installs (`crates/plumline/src/alloc.rs`),
/// so the figures are the CLI's.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code, reason = "as the CLI: mallopt once, before any thread starts")]
    // SAFETY: mallopt only changes allocator parameters; called on the main
    // thread before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
