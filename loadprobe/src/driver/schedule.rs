//! Starting tasks: the closed model's user loops and the open model's fixed schedule, and the
//! end of a run. No request starts after the deadline (or a stop); those in flight at the
//! deadline get [`DriverConfig::grace`] to finish, and whatever is still going then (or at
//! once, after a stop) is cut and counted as unfinished, so that a run ends at its deadline
//! plus the grace at most, whatever the server does.
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

use super::stats::{Stats, error_names};
use super::task::{Conn, Ctx, Ticket};
use super::{Curve, DriverConfig, DriverError, DriverResult, Segment, Stop};
use crate::model::{Live, Workload};

/// How long a user waits after a connection that failed to open at once (a connect refused, no
/// local port, a TLS handshake refused: see [`Ctx::run_one`]) before its next request: long
/// enough to let the other users on its event loop run, and not to hammer a broken server with
/// handshakes, short enough that the error rate still says how often opening fails.
const OPEN_BACKOFF: Duration = Duration::from_millis(10);

pub(crate) async fn run(
    config: DriverConfig,
    live: Arc<Live>,
    stop: Stop,
) -> Result<DriverResult, DriverError> {
    let start_late = match config.start_at {
        Some(at) => Some(wait_until(at, &stop).await),
        None => None,
    };
    let (mut started_at, mut run_start) = (SystemTime::now(), Instant::now());
    // A wake-up a little late (timers, a busy CPU) is taken back: the schedule starts at the
    // agreed moment itself, so the segments of several hosts interleave as one schedule.
    // Later than that, the run starts when it can and its record says how late.
    if let (Some(at), Some(late)) = (config.start_at, start_late) {
        // Stopped while waiting, the run never reached the agreed moment.
        if late <= START_CATCH_UP && !stop.is_stopped() {
            (started_at, run_start) = (at, run_start - late);
        }
    }
    let workers = config.workers;
    let ctx = Arc::new(Ctx::new(config, live, stop.clone(), run_start)?);
    // The probe splits its counts at this instant by the kernel's timestamps, so it must know
    // it before the first connection: told only once the window had started (a task that a
    // busy machine ran late), it took connections of the window for the warmup's.
    ctx.live.window_start_ns.store(
        crate::kernel::instant_ns(ctx.window_start),
        std::sync::atomic::Ordering::Relaxed,
    );
    let marker = tokio::spawn(mark_measuring(ctx.clone()));
    let cutter = tokio::spawn(cut_at_end(ctx.clone()));
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
                cutter.abort();
                return Err(DriverError::Thread(e));
            }
        }
    }
    // A worker that panicked drops its sender: it is finished too.
    let mut dropped = 0;
    for rx in done {
        dropped += rx.await.unwrap_or(0);
    }
    marker.abort();
    cutter.abort();
    let end = Instant::now();
    let stats = ctx.recorder.collect();
    let interrupted = stop.is_stopped();
    let window_end = ctx.deadline.map_or(end, |d| end.min(d));
    let errors = error_names(&stats.errors);
    Ok(DriverResult {
        started_at,
        elapsed: window_end.saturating_duration_since(ctx.window_start),
        total: stats.ok + stats.error_count(),
        ok: stats.ok,
        errors,
        connections_opened: stats.connections,
        histograms: stats.hist,
        timeline: stats.timeline,
        server_fin_missing: stats.fin_missing,
        dropped,
        unfinished: stats.unfinished,
        stale_connection: stats.stale_connection,
        retried: stats.retried,
        by_request: stats.by_request.iter().map(Stats::request_result).collect(),
        interrupted,
        start_late,
        tls: ctx.cfg.tls.is_some().then_some(stats.tls),
    })
}

/// Lateness for `--start-at` that the schedule catches up on (its starts due meanwhile are made
/// at once) rather than starting late.
const START_CATCH_UP: Duration = Duration::from_millis(20);

/// Sleeps until the wall-clock moment `at` (or a stop); returns how late the run is for it.
async fn wait_until(at: SystemTime, stop: &Stop) -> Duration {
    if let Ok(ahead) = at.duration_since(SystemTime::now()) {
        tokio::select! {
            _ = tokio::time::sleep(ahead) => {}
            _ = stop.wait() => {}
        }
    }
    SystemTime::now().duration_since(at).unwrap_or_default()
}

/// Which part of the run's users (or scheduled tasks) a worker runs: those whose index is
/// `worker` modulo `workers`.
#[derive(Clone, Copy)]
struct Share {
    worker: usize,
    workers: usize,
}

/// Cuts what is still in flight once the grace after the deadline is over, or at a stop.
async fn cut_at_end(ctx: Arc<Ctx>) {
    match ctx.deadline {
        Some(deadline) => tokio::select! {
            _ = tokio::time::sleep_until((deadline + ctx.cfg.grace).into()) => {}
            _ = ctx.stop.wait() => {}
        },
        None => ctx.stop.wait().await,
    }
    ctx.cut.stop();
}

/// Starts one worker thread; the receiver gets its dropped starts when it is done.
fn start_worker(
    ctx: Arc<Ctx>,
    share: Share,
    start: Instant,
) -> std::io::Result<oneshot::Receiver<u64>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (finished, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("driver-{}", share.worker))
        .spawn(move || {
            let dropped = runtime.block_on(worker(ctx, share, start));
            let _ = finished.send(dropped);
        })?;
    Ok(rx)
}

/// Runs a worker's share of the run; returns its dropped starts. Every task ends by itself
/// (at the latest when [`Ctx::cut`] is set), so nothing is aborted and lost.
async fn worker(ctx: Arc<Ctx>, share: Share, start: Instant) -> u64 {
    let mut set = JoinSet::new();
    let curve = Arc::new(ctx.cfg.curve());
    let dropped = match ctx.cfg.workload {
        Workload::Closed { think_time, .. } => {
            // A loop for every user the curve ever has; each runs while the curve is above it.
            let users = ctx.cfg.segment.share(curve.max().ceil() as u64) as usize;
            for user in (share.worker..users).step_by(share.workers) {
                set.spawn(user_loop(
                    ctx.clone(),
                    curve.clone(),
                    user,
                    start,
                    think_time,
                ));
            }
            0
        }
        Workload::Open { max_in_flight, .. } => {
            let cap = (max_in_flight as usize).div_ceil(share.workers);
            let pool = Arc::new(Mutex::new(Vec::new()));
            let dropped = open_schedule(&ctx, &mut set, &pool, share, start, &curve, cap).await;
            join_all(&mut set).await;
            let idle = std::mem::take(&mut *lock(&pool));
            let by = Instant::now() + ctx.cfg.grace;
            for conn in idle {
                ctx.close_kept(conn, by).await;
            }
            dropped
        }
    };
    join_all(&mut set).await;
    dropped
}

async fn join_all(set: &mut JoinSet<()>) {
    while set.join_next().await.is_some() {}
}

async fn mark_measuring(ctx: Arc<Ctx>) {
    tokio::time::sleep_until(ctx.window_start.into()).await;
    let live = &ctx.live;
    live.measuring
        .store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A closed-model user: one request after the other, on its own connection when the mode
/// keeps connections, while the curve of users (from `start`) is above this user's number of
/// the run.
async fn user_loop(
    ctx: Arc<Ctx>,
    curve: Arc<Curve>,
    user: usize,
    start: Instant,
    think_time: Duration,
) {
    let mut slot: Option<Conn> = None;
    let mut buf = Vec::with_capacity(8192);
    let global = ctx.cfg.segment.item(user as u64);
    let number = global as f64;
    let mut draws = ctx.chooser.draws(global);
    loop {
        let since = start.elapsed().as_secs_f64();
        if curve.at(since) <= number {
            // Off the curve: the connection goes, and the user waits until it is back on.
            if let Some(conn) = slot.take() {
                ctx.close_kept(conn, Instant::now() + ctx.cfg.grace).await;
            }
            let Some(back) = curve.first_above(number, since) else {
                break;
            };
            tokio::select! {
                _ = tokio::time::sleep_until((start + Duration::from_secs_f64(back)).into()) => {}
                _ = ctx.window_over() => break,
            }
            continue;
        }
        let now = Instant::now();
        let measured = match ctx.ticket(now) {
            Ticket::Done => break,
            Ticket::Warmup => false,
            Ticket::Measured => true,
        };
        let request = ctx.chooser.next(&mut draws);
        let open_failed = ctx
            .run_one(user, request, &mut slot, &mut buf, now, measured)
            .await;
        let pause = if open_failed {
            think_time.max(OPEN_BACKOFF)
        } else {
            think_time
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = ctx.window_over() => break,
            }
        }
    }
    if let Some(conn) = slot.take() {
        ctx.close_kept(conn, Instant::now() + ctx.cfg.grace).await;
    }
}

/// The open model: task `i` of the run is due at `start + i / rate`, whatever happened to
/// earlier tasks; this host runs its segment's tasks ([`Segment::item`] of its own `m`-th),
/// and this worker every `workers`-th of those. Idle keep-alive connections wait in the
/// worker's own `pool` (a connection belongs to the event loop that opened it). Returns the
/// starts that were due in the measured window but not made when it ended: the cap was full,
/// or the schedule was behind.
async fn open_schedule(
    ctx: &Arc<Ctx>,
    set: &mut JoinSet<()>,
    pool: &Arc<Mutex<Vec<Conn>>>,
    share: Share,
    start: Instant,
    curve: &Curve,
    max_in_flight: usize,
) -> u64 {
    let segment = ctx.cfg.segment;
    let due = |m: usize| {
        curve
            .time_of(segment.item(m as u64) as f64)
            .map(|t| start + Duration::from_secs_f64(t))
    };
    let mut i = share.worker;
    loop {
        let Some(intended) = due(i) else {
            // The curve ends at nothing: no start is due any more.
            ctx.window_over().await;
            return 0;
        };
        if ctx.deadline.is_some_and(|d| intended >= d) {
            // Every start of the window was made; the window itself lasts to its end.
            ctx.window_over().await;
            return 0;
        }
        if intended > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(intended.into()) => {}
                _ = ctx.stop.wait() => break,
            }
        }
        while set.try_join_next().is_some() {}
        while set.len() >= max_in_flight {
            // Over the cap: the schedule slips, and the intended-start latency records it.
            tokio::select! {
                _ = set.join_next() => {}
                _ = ctx.window_over() => break,
            }
        }
        if set.len() >= max_in_flight || ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let measured = match ctx.ticket(intended) {
            Ticket::Done if ctx.stop.is_stopped() => break,
            Ticket::Done => return 0,
            Ticket::Warmup => false,
            Ticket::Measured => true,
        };
        set.spawn(open_task(ctx.clone(), pool.clone(), i, intended, measured));
        i += share.workers;
    }
    let end = ctx
        .deadline
        .map_or_else(Instant::now, |d| d.min(Instant::now()));
    unmade(
        share,
        segment,
        i,
        curve,
        ctx.window_start - start,
        end - start,
    )
}

/// How many of `share`'s tasks from `next` on were due from `from` to `until` (measured from
/// the schedule's start), on a schedule of `curve` tasks a second of which `segment`'s are this
/// host's.
fn unmade(
    share: Share,
    segment: Segment,
    next: usize,
    curve: &Curve,
    from: Duration,
    until: Duration,
) -> u64 {
    // This host's task m is the run's offset + m * count, due when the curve's integral reaches
    // that: the first due at or after t is ceil((integral(t) - offset) / count) (at least 0).
    let (offset, count) = (segment.offset() as f64, f64::from(segment.count()));
    let first_at = |t: Duration| {
        ((curve.cumulative(t.as_secs_f64()) - offset) / count)
            .ceil()
            .max(0.0) as u64
    };
    let workers = share.workers as u64;
    let (first, end) = (first_at(from), first_at(until));
    // The first of this worker's tasks at or after both `next` and `first`.
    let lo = (next as u64).max(first);
    let lo = lo + (share.worker as u64 + workers - lo % workers) % workers;
    end.saturating_sub(lo).div_ceil(workers)
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
    // One draw, from the start's number in the whole run.
    let mut draws = ctx.chooser.draws(ctx.cfg.segment.item(idx as u64));
    let request = ctx.chooser.next(&mut draws);
    // A connection that failed to open ends this task; the schedule, not a retry loop, starts
    // the next one.
    ctx.run_one(idx, request, &mut slot, &mut buf, intended, measured)
        .await;
    if let Some(conn) = slot {
        lock(&pool).push(conn);
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every worker of every segment, counting its own unmade starts, together count each start
    /// of the single schedule that was due in the window exactly once (against a brute count).
    #[test]
    fn unmade_starts_of_all_segments_and_workers_add_up_to_the_whole() {
        let rate = 37.5;
        let (from, until) = (Duration::from_millis(1_300), Duration::from_millis(4_170));
        let due_in_window = (0..10_000u64)
            .filter(|&i| {
                let t = i as f64 / rate;
                t >= from.as_secs_f64() && t < until.as_secs_f64()
            })
            .count() as u64;
        for count in [1, 3, 4] {
            for workers in [1, 2, 3] {
                let mut sum = 0;
                for k in 1..=count {
                    let segment = Segment::new(k, count).unwrap();
                    for worker in 0..workers {
                        let share = Share { worker, workers };
                        sum += unmade(share, segment, worker, &Curve::constant(rate), from, until);
                    }
                }
                assert_eq!(sum, due_in_window, "{count} segments, {workers} workers");
            }
        }
    }
}
