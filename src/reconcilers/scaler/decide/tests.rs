use super::*;

const TICK: Duration = Duration::from_millis(250);

fn knobs(min: u32, max: u32, zero_after: Option<u64>) -> Knobs {
    Knobs {
        // concurrency 8 × 0.7
        target: 5.6,
        stable: Duration::from_secs(60),
        panic: Duration::from_secs(6),
        threshold: 2.0,
        min,
        max,
        zero_after: zero_after.map(Duration::from_secs),
    }
}

fn seen(current: u32, ready: u32, queued: u64, demand_now: f64) -> Seen {
    Seen {
        current,
        ready,
        queued,
        demand_now,
    }
}

/// Feeds `demand` for `secs` seconds, one sample a tick, deciding every tick as the loop does,
/// with `current` following the decisions (and `ready` = current). Returns the last decision,
/// its reason replaced by that of the last change in the run (`Hold` when none).
async fn run(mem: &mut Memory, k: &Knobs, current: &mut u32, demand: f64, secs: f64) -> Decision {
    let ticks = (secs / TICK.as_secs_f64()).round() as u32;
    let mut last = None;
    let mut changed = reason::HOLD;
    for _ in 0..ticks {
        tokio::time::advance(TICK).await;
        let now = Instant::now();
        mem.observe(now, demand, false, k.stable);
        let d = decide(mem, k, &seen(*current, *current, 0, 0.0), now);
        if d.desired != *current {
            changed = d.reason;
        }
        *current = d.desired;
        last = Some(d);
    }
    let mut d = last.expect("at least one tick");
    d.reason = changed;
    d
}

#[tokio::test(start_paused = true)]
async fn steady_load_sizes_for_the_target() {
    let k = knobs(1, 10, None);
    let mut mem = Memory::new(Instant::now());
    let mut cur = 1;
    // 20 in flight at 5.6 per replica: 4 replicas (panic first, at 20/5.6 = 4 ≥ 2 × 1).
    let d = run(&mut mem, &k, &mut cur, 20.0, 120.0).await;
    assert_eq!(d.desired, 4);
    assert!(!d.panic, "a stable window after the burst, panic is over");
    assert!((d.stable - 20.0).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn a_burst_panics_within_a_second_and_never_scales_down_while_panicking() {
    let k = knobs(1, 50, None);
    let mut mem = Memory::new(Instant::now());
    let mut cur = 1;
    run(&mut mem, &k, &mut cur, 3.0, 70.0).await;
    assert_eq!(cur, 1);
    // 10× the load: within a second the panic average alone asks for more.
    let d = run(&mut mem, &k, &mut cur, 30.0, 1.0).await;
    assert!(d.panic, "{d:?}");
    assert_eq!(d.reason, reason::PANIC);
    assert!(d.desired >= 2, "{d:?}");
    // The burst holds: the panic average catches up with it.
    let d = run(&mut mem, &k, &mut cur, 30.0, 6.0).await;
    assert_eq!(d.desired, 6, "ceil(30 / 5.6): {d:?}");
    // The burst ends: no scale-down while panicking (a stable window after the last burst).
    let d = run(&mut mem, &k, &mut cur, 3.0, 50.0).await;
    assert!(d.panic);
    assert_eq!(d.desired, 6);
    // Then the stable average rules again, and takes the function down.
    let d = run(&mut mem, &k, &mut cur, 3.0, 80.0).await;
    assert!(!d.panic);
    assert_eq!(d.desired, 1);
}

#[tokio::test(start_paused = true)]
async fn callers_waiting_for_a_slot_size_a_step_at_once_past_the_threshold_only() {
    let k = knobs(1, 50, None);
    let mut mem = Memory::new(Instant::now());
    let mut cur = 1;
    run(&mut mem, &k, &mut cur, 3.0, 70.0).await;
    assert_eq!(cur, 1);
    // 10× in flight, most of it waiting for a slot: the first report after the step asks for
    // the whole step (ceil(30 / 5.6)) though the panic average has barely moved.
    let now = Instant::now();
    let d = decide(&mut mem, &k, &seen(1, 1, 22, 30.0), now);
    assert!(d.panic_avg < 5.6, "{d:?}");
    assert_eq!(
        (d.desired, d.reason, d.panic),
        (6, reason::PANIC, true),
        "{d:?}"
    );
    assert!(
        d.message.contains("30 now with callers waiting"),
        "{}",
        d.message
    );
    // A few callers waiting on a function near its target: under the threshold, no panic
    // (8 now at 5.6 per replica asks for 2 < 2 × 2 ready).
    let k = knobs(1, 50, None);
    let mut mem = Memory::new(Instant::now());
    let mut cur = 2;
    run(&mut mem, &k, &mut cur, 8.0, 70.0).await;
    assert_eq!(cur, 2);
    let d = decide(&mut mem, &k, &seen(2, 2, 2, 11.0), Instant::now());
    assert_eq!((d.desired, d.panic), (2, false), "{d:?}");
    // Waiting with no replica ready is the activator's business: one replica, as before.
    let k = knobs(0, 50, Some(30));
    let mut mem = Memory::new(Instant::now());
    let d = decide(&mut mem, &k, &seen(0, 0, 30, 30.0), Instant::now());
    assert_eq!((d.desired, d.reason), (1, reason::ACTIVATE), "{d:?}");
}

#[tokio::test(start_paused = true)]
async fn held_requests_activate_at_once_and_idle_goes_to_zero_after_its_window() {
    let k = knobs(0, 10, Some(30));
    let mut mem = Memory::new(Instant::now());
    // Idle from the start: zero once the window passed, one kept before.
    let mut cur = 1;
    let d = run(&mut mem, &k, &mut cur, 0.0, 29.0).await;
    assert_eq!(d.desired, 1, "{d:?}");
    let d = run(&mut mem, &k, &mut cur, 0.0, 2.0).await;
    assert_eq!((d.desired, d.reason), (0, reason::SCALE_TO_ZERO), "{d:?}");
    // A held request at zero: one replica on the same tick, no average needed.
    let now = Instant::now();
    mem.observe(now, 1.0, true, k.stable);
    let d = decide(&mut mem, &k, &seen(0, 0, 1, 1.0), now);
    assert_eq!((d.desired, d.reason), (1, reason::ACTIVATE), "{d:?}");
    // Served, then idle again: zero only a whole window after the last request.
    cur = 1;
    run(&mut mem, &k, &mut cur, 0.0, 20.0).await;
    assert_eq!(cur, 1);
    run(&mut mem, &k, &mut cur, 0.0, 11.0).await;
    assert_eq!(cur, 0);
}

#[tokio::test(start_paused = true)]
async fn min_replicas_hold_without_a_zero_window_and_the_ceiling_wins() {
    let k = knobs(2, 3, None);
    let mut mem = Memory::new(Instant::now());
    let mut cur = 2;
    let d = run(&mut mem, &k, &mut cur, 0.0, 600.0).await;
    assert_eq!(d.desired, 2, "never below minReplicas");
    let d = run(&mut mem, &k, &mut cur, 100.0, 120.0).await;
    assert_eq!(d.desired, 3, "never above maxReplicas");
    // min > max (edited by hand past validation): the ceiling, no panic.
    let bad = knobs(5, 2, None);
    let d = decide(&mut mem, &bad, &seen(2, 2, 0, 0.0), Instant::now());
    assert_eq!(d.desired, 2);
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_does_not_scale_down_before_a_stable_window() {
    let k = knobs(1, 10, None);
    // Took over a function running 5 replicas, with no samples yet.
    let mut mem = Memory::new(Instant::now());
    let mut cur = 5;
    let d = run(&mut mem, &k, &mut cur, 0.0, 30.0).await;
    assert_eq!(d.desired, 5, "{d:?}");
    let d = run(&mut mem, &k, &mut cur, 0.0, 31.0).await;
    assert_eq!((d.desired, d.reason), (1, reason::SCALE_DOWN), "{d:?}");
}

#[test]
fn knobs_from_the_spec() {
    let spec: FunctionSpec = serde_saphyr::from_str(
        "runtime: shell\ncode: {inline: cat}\nconcurrency: 4\nminReplicas: 0\nautoscaling: {targetUtilization: 0.5, stableWindowSeconds: 20, panicWindowSeconds: 30}\n",
    )
    .unwrap();
    let k = Knobs::of(&spec);
    assert!((k.target - 2.0).abs() < 1e-9);
    assert_eq!(k.stable, Duration::from_secs(20));
    assert_eq!(k.panic, Duration::from_secs(20), "never longer than stable");
    assert_eq!(
        k.zero_after,
        Some(Duration::from_secs(20)),
        "min 0: the stable window"
    );
    let spec: FunctionSpec =
        serde_saphyr::from_str("runtime: shell\ncode: {inline: cat}\n").unwrap();
    assert_eq!(Knobs::of(&spec).zero_after, None, "min 1 stays");
}
