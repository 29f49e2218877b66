//! Starting tasks: the closed model's user loops and the open model's fixed schedule, and a
//! bounded wind-down when the run ends.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
    let workload = config.workload;
    let ctx = Arc::new(Ctx::new(config, live, stop.clone(), run_start)?);
    let marker = tokio::spawn(mark_measuring(ctx.clone()));
    let mut set = JoinSet::new();
    match workload {
        Workload::Closed { users, think_time } => {
            for user in 0..users as usize {
                set.spawn(user_loop(ctx.clone(), user, think_time));
            }
            tokio::select! {
                _ = join_all(&mut set) => {}
                _ = stop.wait() => {}
            }
        }
        Workload::Open {
            rate,
            max_in_flight,
        } => {
            open_schedule(&ctx, &mut set, rate, max_in_flight as usize).await;
        }
    }
    let _ = tokio::time::timeout(WIND_DOWN, join_all(&mut set)).await;
    set.abort_all();
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

/// The open model: task `i` is due at `start + i / rate`, whatever happened to earlier tasks.
async fn open_schedule(ctx: &Arc<Ctx>, set: &mut JoinSet<()>, rate: f64, max_in_flight: usize) {
    let start = Instant::now();
    let mut i: u64 = 0;
    loop {
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
        set.spawn(open_task(ctx.clone(), i as usize, intended, measured));
        i += 1;
    }
}

async fn open_task(ctx: Arc<Ctx>, idx: usize, intended: Instant, measured: bool) {
    let mut slot = lock(&ctx.pool).pop();
    let mut buf = Vec::with_capacity(4096);
    ctx.run_one(idx, &mut slot, &mut buf, intended, measured)
        .await;
    if let Some(conn) = slot {
        lock(&ctx.pool).push(conn);
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
