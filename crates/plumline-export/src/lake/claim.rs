//! Claims: which run writes a (number, day) partition now.
//!
//! A claim is a small JSON object at `_plumline/claims/<slug>/<date>.json`
//! naming its run ([`RunId`]: host, pid, start time, a random token) and
//! when its lease expires. It is
//! - **taken** with create-if-absent; if one exists and is released,
//!   expired, unreadable, or names a process of this machine that is gone,
//!   it is **taken over** with replace-if-unchanged (so of two runs racing
//!   for it, one wins), and what its run had staged (recorded write-ahead in
//!   the claim) is removed;
//! - **renewed** every third of the lease with replace-if-unchanged; a
//!   renewal that finds the claim changed means another run took it over
//!   (this run was too slow): the day is abandoned, never committed;
//! - **released** (replaced by a released claim) once the day is committed
//!   or abandoned.
//!
//! A run that finds a live claim waits for it, up to a bound, then fails
//! naming the partition and the other run. Leases compare wall clocks of
//! different machines, so the lease must exceed their clock skew.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::layout::{claim_file, data_file, state_file};
use super::{BoxFut, Destination, Stage, StageRecorder, Version};
use crate::error::ExportError;
use crate::plan::DayPartition;

/// Who a run is, as its claims name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunId {
    /// The machine's host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When the run started (UNIX seconds).
    pub started_at: i64,
    /// A random token, unique per run; temp names carry it.
    pub token: String,
    /// The machine's boot id (Linux), so a pid is only compared within one
    /// boot of one machine.
    #[serde(default)]
    pub boot_id: String,
    /// The process's start time in clock ticks since boot (Linux), so a
    /// reused pid is not mistaken for the run.
    #[serde(default)]
    pub process_start: Option<u64>,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Eight hex digits naming this machine and boot: the start of every run
/// token made here, so a temp's name tells whether its run was local.
pub(crate) fn host_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let host = read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default();
        let boot = read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let mut h: u32 = 0x811c_9dc5;
        for b in host.bytes().chain([0]).chain(boot.bytes()) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    })
}

/// Whether the process `pid` of this machine is gone.
pub(crate) fn process_is_gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time since boot.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

impl RunId {
    /// This process's identity (computed once).
    #[must_use]
    pub fn current() -> RunId {
        static CURRENT: OnceLock<RunId> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                let pid = std::process::id();
                RunId {
                    host: read_trimmed("/proc/sys/kernel/hostname")
                        .or_else(|| std::env::var("HOSTNAME").ok())
                        .unwrap_or_else(|| "unknown-host".to_owned()),
                    pid,
                    started_at: Timestamp::now().as_second(),
                    token: format!("r{}{:08x}", host_tag(), fastrand::u32(..)),
                    boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
                    process_start: process_start(pid),
                }
            })
            .clone()
    }

    /// Whether this run is known to be gone: it ran on this machine in this
    /// boot, and its process no longer exists (or its pid is another
    /// process now).
    fn is_gone(&self) -> bool {
        let me = RunId::current();
        if self.host != me.host
            || self.boot_id.is_empty()
            || self.boot_id != me.boot_id
            || self.token == me.token
        {
            return false;
        }
        match process_start(self.pid) {
            None => true,
            Some(start) => self.process_start.is_some_and(|recorded| recorded != start),
        }
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let started = Timestamp::from_second(self.started_at)
            .map_or_else(|_| self.started_at.to_string(), |t| t.to_string());
        write!(f, "run {} (host {}, pid {}, started {started})", self.token, self.host, self.pid)
    }
}

/// How claims behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimSettings {
    /// How long a claim lives without renewal.
    pub(crate) lease: Duration,
    /// How long to wait for another run's live claim before failing.
    pub(crate) wait: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimBody {
    run: RunId,
    date: String,
    number: Option<String>,
    /// UNIX milliseconds.
    expires_at_ms: i64,
    released: bool,
    /// What the run staged for the day, recorded before each stage holds data.
    stages: Vec<Stage>,
}

impl ClaimBody {
    fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec_pretty(self).unwrap_or_default())
    }
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

struct ClaimInner {
    dest: Arc<dyn Destination>,
    rel: String,
    location: String,
    lease: Duration,
    state: Mutex<(Version, ClaimBody)>,
    lost: AtomicBool,
}

/// A held claim on one partition. Dropping it stops renewing (the lease
/// then expires); [`Claim::release`] hands it back at once.
pub(crate) struct Claim {
    inner: Arc<ClaimInner>,
    token: String,
    renewer: JoinHandle<()>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("location", &self.inner.location).finish_non_exhaustive()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl ClaimInner {
    /// Writes `body` over the claim if it is still ours.
    async fn put(&self, state: &mut (Version, ClaimBody)) -> Result<(), ExportError> {
        if let Some(version) = self.dest.replace(&self.rel, state.1.to_bytes(), &state.0).await? {
            state.0 = version;
            Ok(())
        } else {
            self.lost.store(true, Ordering::SeqCst);
            Err(ExportError::ClaimLost { location: self.location.clone() })
        }
    }

    async fn renew(&self) -> Result<(), ExportError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(ExportError::ClaimLost { location: self.location.clone() });
        }
        let mut state = self.state.lock().await;
        state.1.expires_at_ms = now_ms().saturating_add(lease_ms(self.lease));
        self.put(&mut state).await
    }
}

impl Claim {
    /// Takes the claim of `p` for `run`, waiting (up to `settings.wait`)
    /// for another run's live claim; `on_wait` is told once whom it waits
    /// for.
    ///
    /// # Errors
    /// [`ExportError::ClaimHeld`] when another live run still holds it
    /// after the wait; store errors.
    ///
    /// # Cancel safety
    /// Dropping the future may leave a claim taken but not renewed: it
    /// expires after its lease.
    pub(crate) async fn acquire(
        dest: &Arc<dyn Destination>,
        p: &DayPartition,
        run: &RunId,
        settings: ClaimSettings,
        on_wait: &(dyn Fn(&RunId) + Send + Sync),
    ) -> Result<Claim, ExportError> {
        let rel = claim_file(p);
        let location = format!("{}/{rel}", dest.display());
        let deadline = Instant::now() + settings.wait;
        let mut announced = false;
        loop {
            let body = ClaimBody {
                run: run.clone(),
                date: p.date().to_string(),
                number: p.number().map(str::to_owned),
                expires_at_ms: now_ms().saturating_add(lease_ms(settings.lease)),
                released: false,
                stages: Vec::new(),
            };
            if let Some(version) = dest.create(&rel, body.to_bytes()).await? {
                debug!(claim = %location, "claimed");
                return Ok(Claim::start(dest, rel, location, settings.lease, version, body));
            }
            let Some((raw, version)) = dest.read(&rel).await? else { continue };
            let other = serde_json::from_slice::<ClaimBody>(&raw);
            let holder = match &other {
                Ok(o) if !o.released && o.expires_at_ms > now_ms() && !o.run.is_gone() => Some(o.run.clone()),
                _ => None,
            };
            if let Some(holder) = holder {
                if Instant::now() >= deadline {
                    return Err(ExportError::ClaimHeld {
                        day: p.date(),
                        number: p.number().map(str::to_owned),
                        holder: holder.to_string(),
                        waited: settings.wait,
                    });
                }
                if !announced {
                    announced = true;
                    on_wait(&holder);
                    info!(day = %p.date(), number = p.number(), holder = %holder, "another run is writing this day; waiting for it");
                }
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(left.min(Duration::from_millis(250))).await;
                continue;
            }
            // Released, expired, unreadable or dead: take it over, if no
            // other run does so first.
            let Some(version) = dest.replace(&rel, body.to_bytes(), &version).await? else { continue };
            // A released claim's run finished the day cleanly; only an
            // expired or dead one may have left stages and temps behind.
            if let Ok(old) = other
                && !old.released
            {
                warn!(day = %p.date(), number = p.number(), holder = %old.run, "took over the claim of a run that is gone or expired");
                for stage in &old.stages {
                    dest.discard(stage).await?;
                }
                // Its temps, including small ones it had not recorded (a
                // claim or state being written when it died).
                let mut swept = 0;
                for rel in [data_file(p), claim_file(p), state_file(p)] {
                    swept += dest.sweep(&rel, &old.run.token).await?;
                }
                if swept > 0 || !old.stages.is_empty() {
                    info!(day = %p.date(), stages = old.stages.len(), swept, "removed what the previous run had staged");
                }
            }
            return Ok(Claim::start(dest, rel, location, settings.lease, version, body));
        }
    }

    fn start(
        dest: &Arc<dyn Destination>,
        rel: String,
        location: String,
        lease: Duration,
        version: Version,
        body: ClaimBody,
    ) -> Claim {
        let token = body.run.token.clone();
        let inner = Arc::new(ClaimInner {
            dest: Arc::clone(dest),
            rel,
            location,
            lease,
            state: Mutex::new((version, body)),
            lost: AtomicBool::new(false),
        });
        let renewing = Arc::clone(&inner);
        let renewer = tokio::spawn(async move {
            let every = (renewing.lease / 3).max(Duration::from_millis(50));
            loop {
                tokio::time::sleep(every).await;
                match renewing.renew().await {
                    Ok(()) => {}
                    Err(ExportError::ClaimLost { .. }) => {
                        warn!(claim = %renewing.location, "another run took this claim over; the day will not be committed");
                        return;
                    }
                    Err(error) => {
                        warn!(claim = %renewing.location, error = %plumline_api::error_chain(&error), "could not renew a claim; retrying");
                    }
                }
            }
        });
        Claim { inner, token, renewer }
    }

    /// The run token temp names carry.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Records stages in the claim (write-ahead) for the destination.
    pub(crate) fn recorder(&self) -> StageRecorder {
        let inner = Arc::clone(&self.inner);
        Arc::new(move |stage: Stage| -> BoxFut<'static, Result<(), ExportError>> {
            let inner = Arc::clone(&inner);
            Box::pin(async move {
                let mut state = inner.state.lock().await;
                state.1.stages.push(stage);
                inner.put(&mut state).await
            })
        })
    }

    /// Renews the lease now, proving the claim is still ours for a whole
    /// lease: called right before a commit.
    ///
    /// # Errors
    /// [`ExportError::ClaimLost`] if another run took it over.
    pub(crate) async fn confirm(&self) -> Result<(), ExportError> {
        self.inner.renew().await
    }

    /// Hands the claim back (its stages are done with).
    ///
    /// # Cancel safety
    /// Dropping the future leaves the claim to expire.
    pub(crate) async fn release(self) {
        self.renewer.abort();
        if self.inner.lost.load(Ordering::SeqCst) {
            return;
        }
        let mut state = self.inner.state.lock().await;
        state.1.released = true;
        state.1.stages.clear();
        state.1.expires_at_ms = 0;
        if let Err(error) = self.inner.put(&mut state).await {
            warn!(claim = %self.inner.location, error = %plumline_api::error_chain(&error), "could not release a claim; it expires with its lease");
        }
    }
}
