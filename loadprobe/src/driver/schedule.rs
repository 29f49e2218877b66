//! Starting tasks: the closed model's user loops and the open model's fixed schedule, and a
//! bounded wind-down when the run ends.
//!
//! The load runs on [`DriverConfig::workers`] threads, each a single-threaded tokio runtime
//! with its own epoll instance, timers and tasks, and every `workers`-th user (or scheduled
//! task) of the run: independent event loops, as wrk has. Tasks on one shared multi-threaded
//! runtime scaled 1.37× from one thread to two on a 2-core machine, against 1.65× for wrk: one
//! epoll instance and work stealing make wakeups cross threads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::errors::ErrorClass;
use super::task::{Conn, Ctx, Ticket};
use super::{DriverConfig, DriverError, DriverResult, Live, Stop, Workload};

/// How long tasks still in flight at the end may take to finish before they are abandoned.
const WIND_DOWN: Duration = Duration::from_secs(3);

pub(crate) async fn run(
    config: DriverConfig,
    live: Arc<Live>,
    stop: Stop,
) -> Result<DriverResult, DriverError> {
    let started_at = SystemTime::now();
    let run_start = Instant::now();
    let workers = config.workers;
    let ctx = Arc::new(Ctx::new(config, live, stop.clone(), run_start)?);
    let marker = tokio::spawn(mark_measuring(ctx.clone()));
    let mut done = Vec::with_capacity(workers);
    for worker in 0..workers {
        match start_worker(ctx.clone(), Share { worker, workers }, run_start) {
            Ok(rx) => done.push(rx),
            Err(e) => {
                // Those already started stop at once; what they measured is dropped with them.
                stop.stop();
                for rx in done {
                    let _ = rx.await;
                }
                marker.abort();
                return Err(DriverError::Config(format!(
                    "cannot start a driver thread: {e}"
                )));
            }
        }
    }
    // A worker that panicked drops its sender: it is finished too.
    for rx in done {
        let _ = rx.await;
    }
    marker.abort();
    let end = Instant::now();
    let stats = ctx.recorder.collect();
    let interrupted = stop.is_stopped()
        && ctx.deadline.is_none_or(|d| end < d)
        && ctx
            .cfg
            .requests
            .is_none_or(|n| stats.ok + stats.error_count() < n);
    let errors = stats
        .errors
        .iter()
        .map(|(class, n): (&ErrorClass, &u64)| (class.name().into_owned(), *n))
        .collect();
    Ok(DriverResult {
        started_at,
        elapsed: end.saturating_duration_since(ctx.window_start),
        total: stats.ok + stats.error_count(),
        ok: stats.ok,
        errors,
        connections_opened: stats.connections,
        histograms: stats.hist,
        timeline: stats.timeline,
        server_fin_missing: stats.fin_missing,
        interrupted,
    })
}

/// Which part of the run's users (or scheduled tasks) a worker runs: those whose index is
/// `worker` modulo `workers`.
#[derive(Clone, Copy)]
struct Share {
    worker: usize,
    workers: usize,
}

/// Starts one worker thread; the receiver completes when it is done.
fn start_worker(
    ctx: Arc<Ctx>,
    share: Share,
    start: Instant,
) -> std::io::Result<oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (finished, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("driver-{}", share.worker))
        .spawn(move || {
            runtime.block_on(worker(ctx, share, start));
            let _ = finished.send(());
        })?;
    Ok(rx)
}

async fn worker(ctx: Arc<Ctx>, share: Share, start: Instant) {
    let mut set = JoinSet::new();
    match ctx.cfg.workload {
        Workload::Closed { users, think_time } => {
            for user in (share.worker..users as usize).step_by(share.workers) {
                set.spawn(user_loop(ctx.clone(), user, think_time));
            }
            tokio::select! {
                _ = join_all(&mut set) => {}
                _ = ctx.stop.wait() => {}
            }
        }
        Workload::Open {
            rate,
            max_in_flight,
        } => {
            let cap = (max_in_flight as usize).div_ceil(share.workers);
            open_schedule(&ctx, &mut set, share, start, rate, cap).await;
        }
    }
    let _ = tokio::time::timeout(WIND_DOWN, join_all(&mut set)).await;
    set.abort_all();
}

async fn join_all(set: &mut JoinSet<()>) {
    while set.join_next().await.is_some() {}
}

async fn mark_measuring(ctx: Arc<Ctx>) {
    tokio::time::sleep_until(ctx.window_start.into()).await;
    let live = &ctx.live;
    live.window_start_ns.store(
        crate::kernel::instant_ns(ctx.window_start),
        std::sync::atomic::Ordering::Relaxed,
    );
    live.measuring
        .store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A closed-model user: one request after the other, on its own connection when the mode
/// keeps connections.
async fn user_loop(ctx: Arc<Ctx>, user: usize, think_time: Duration) {
    let mut slot: Option<Conn> = None;
    let mut buf = Vec::with_capacity(8192);
    loop {
        let now = Instant::now();
        let measured = match ctx.ticket(now) {
            Ticket::Done => break,
            Ticket::Warmup => false,
            Ticket::Measured => true,
        };
        ctx.run_one(user, &mut slot, &mut buf, now, measured).await;
        if !think_time.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(think_time) => {}
                _ = ctx.stop.wait() => break,
            }
        }
    }
}

/// The open model: task `i` of the run is due at `start + i / rate`, whatever happened to
/// earlier tasks; this worker runs its share of them. Idle keep-alive connections wait in the
/// worker's own pool (a connection belongs to the event loop that opened it).
async fn open_schedule(
    ctx: &Arc<Ctx>,
    set: &mut JoinSet<()>,
    share: Share,
    start: Instant,
    rate: f64,
    max_in_flight: usize,
) {
    let pool = Arc::new(Mutex::new(Vec::new()));
    for i in (share.worker..).step_by(share.workers) {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if intended > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(intended.into()) => {}
                _ = ctx.stop.wait() => return,
            }
        }
        let measured = match ctx.ticket(intended) {
            Ticket::Done => return,
            Ticket::Warmup => false,
            Ticket::Measured => true,
        };
        while set.try_join_next().is_some() {}
        while set.len() >= max_in_flight {
            // Over the cap: the schedule slips, and the intended-start latency records it.
            tokio::select! {
                _ = set.join_next() => {}
                _ = ctx.stop.wait() => return,
            }
        }
        set.spawn(open_task(ctx.clone(), pool.clone(), i, intended, measured));
    }
}

async fn open_task(
    ctx: Arc<Ctx>,
    pool: Arc<Mutex<Vec<Conn>>>,
    idx: usize,
    intended: Instant,
    measured: bool,
) {
    let mut slot = lock(&pool).pop();
    let mut buf = Vec::with_capacity(4096);
    ctx.run_one(idx, &mut slot, &mut buf, intended, measured)
        .await;
    if let Some(conn) = slot {
        lock(&pool).push(conn);
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
