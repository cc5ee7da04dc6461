use super::Work;
use super::*;
use crate::report::run_all;
use switchyard_decision::{LeastLoaded, RoundRobin, TaskState};

fn workload(agents: &str, tasks: &str, extra: &str) -> Workload {
    let text = format!(
        r#"
seed = 5
{extra}
{agents}
[tasks]
{tasks}
[[tasks.types]]
name = "job"
priority = [1, 10]
resources = {{ cpu = 1 }}
estimated_duration_s = [2.0, 6.0]
"#
    );
    match Workload::parse(&text) {
        Ok(w) => w,
        Err(e) => panic!("{e}\n{text}"),
    }
}

const TWO_TYPES: &str = r#"
[[agent_types]]
name = "fast"
count = 2
capacity = { cpu = 2 }
truth.job = { speed = 0.5, failure_rate = 0.1, noise = 0.3 }
[[agent_types]]
name = "slow"
count = 3
capacity = { cpu = 2 }
truth.job = { speed = 2.0, failure_rate = 0.3, noise = 0.3 }
"#;

const DEEP: &str = "count = 400\narrival = \"bursty\"\nburst_size = 50\nburst_every_s = 10.0\n\
    [tasks.dependencies]\nprobability = 0.9\nfan_in = 3\nmax_depth = 10\nlookback = 15";

#[test]
fn same_seed_same_outcome() {
    let w = workload(TWO_TYPES, DEEP, "");
    let a = simulate(&w, Placer::Strategy(&RoundRobin)).unwrap();
    let b = simulate(&w, Placer::Strategy(&RoundRobin)).unwrap();
    assert_eq!(a, b);
    let ja = serde_json::to_string(&run_all(&w).unwrap()).unwrap();
    let jb = serde_json::to_string(&run_all(&w).unwrap()).unwrap();
    assert_eq!(ja, jb);
    let other = Workload { seed: 6, ..w };
    assert_ne!(
        serde_json::to_string(&run_all(&other).unwrap()).unwrap(),
        ja
    );
}

#[test]
fn dependencies_are_respected() {
    let w = workload(TWO_TYPES, DEEP, "");
    for placer in [Placer::Strategy(&LeastLoaded), Placer::Oracle] {
        let o = simulate(&w, placer).unwrap();
        assert!(o.tasks.iter().any(|t| t.parents.len() > 1));
        for (i, t) in o.tasks.iter().enumerate() {
            let Some(start) = t.first_start_s else {
                continue;
            };
            assert!(start >= t.submit_s, "task {i} started before submission");
            for &p in &t.parents {
                let done = o.tasks[p].completed_s;
                assert!(
                    done.is_some_and(|d| d <= start),
                    "task {i} started before parent {p}"
                );
            }
        }
    }
}

#[test]
fn every_task_finishes_and_capacity_returns_to_zero() {
    let w = workload(TWO_TYPES, DEEP, "");
    let mut engine = Engine::new(&w, Placer::Strategy(&RoundRobin));
    engine.run().unwrap();
    assert!(
        engine
            .runs
            .iter()
            .all(|r| r.state.is_some_and(TaskState::is_terminal))
    );
    assert!(
        engine
            .agents
            .iter()
            .all(|a| a.reserved.is_zero() && a.active == 0)
    );
}

#[test]
fn over_capacity_grant_is_an_error_not_a_panic() {
    let w = workload(
        TWO_TYPES,
        "count = 2\narrival = \"poisson\"\nrate_per_s = 1.0",
        "",
    );
    let mut engine = Engine::new(&w, Placer::Strategy(&RoundRobin));
    engine.arrive(0).unwrap();
    engine.agents[0].reserved = engine.agents[0].capacity;
    engine.agents[0].running.push(1);
    let err = engine.grant(0, 0).unwrap_err();
    assert!(err.to_string().contains("over capacity"), "{err}");
}

#[test]
fn grant_before_parent_is_an_error() {
    let w = workload(TWO_TYPES, DEEP, "");
    let mut engine = Engine::new(&w, Placer::Strategy(&RoundRobin));
    let child = engine
        .stream
        .iter()
        .position(|t| !t.parents.is_empty())
        .unwrap();
    // Forced into the ready queue past the state machine, as a bug would.
    engine.runs[child].state = Some(TaskState::Queued);
    engine.make_ready(child);
    let err = engine.grant(child, 0).unwrap_err();
    assert!(err.to_string().contains("before its parent"), "{err}");
}

#[test]
fn failing_agents_exhaust_retries_and_fail_dependents() {
    let agents = "[[agent_types]]\nname = \"bad\"\ncount = 2\ncapacity = { cpu = 2 }\n\
                  truth.job = { failure_rate = 1.0 }";
    let w = workload(agents, DEEP, "[retry]\nmax_attempts = 2\nbackoff_s = 0.5");
    let o = simulate(&w, Placer::Strategy(&RoundRobin)).unwrap();
    assert!(o.tasks.iter().all(|t| t.failed && t.completed_s.is_none()));
    assert!(o.tasks.iter().all(|t| t.grants == 0 || t.grants == 2));
    // Dependents of failed tasks fail without ever running.
    assert!(
        o.tasks
            .iter()
            .any(|t| t.grants == 0 && !t.parents.is_empty())
    );
}

#[test]
fn dead_agents_tasks_are_requeued_and_complete() {
    let agents = "[[agent_types]]\nname = \"w\"\ncount = 2\ncapacity = { cpu = 4 }\n\
                  truth.job = { speed = 1.0 }";
    let events = "[[events]]\nat_s = 3.0\nagent = { type = \"w\", index = 0 }\nkind = \"die\"\n\
                  [[events]]\nat_s = 1.0\nagent = { type = \"w\", index = 1 }\nkind = \"degrade\"\nspeed_factor = 2.0";
    let tasks = "count = 40\narrival = \"bursty\"\nburst_size = 20\nburst_every_s = 5.0";
    let w = workload(&format!("{agents}\n{events}"), tasks, "");
    let o = simulate(&w, Placer::Strategy(&RoundRobin)).unwrap();
    assert!(o.tasks.iter().all(|t| t.completed_s.is_some()));
    // Some first attempts were cut short by the death, and were re-granted.
    assert!(
        o.tasks
            .iter()
            .any(|t| t.grants == 2 && t.first_attempt_ok == Some(false))
    );
    // After t=3 only w-001 runs; it is degraded, so late tasks take twice the estimate or more.
    let late: Vec<_> = o.tasks.iter().filter(|t| t.submit_s >= 5.0).collect();
    assert!(
        late.iter()
            .all(|t| t.completed_s.unwrap() - t.last_start_s.unwrap() >= 4.0 - 1e-6)
    );
}

#[test]
fn reliable_fleet_has_full_first_attempt_success() {
    let agents = "[[agent_types]]\nname = \"w\"\ncount = 3\ncapacity = { cpu = 2 }";
    let w = workload(
        agents,
        "count = 100\narrival = \"poisson\"\nrate_per_s = 0.5",
        "",
    );
    let o = simulate(&w, Placer::Strategy(&RoundRobin)).unwrap();
    assert!(
        o.tasks
            .iter()
            .all(|t| t.first_attempt_ok == Some(true) && t.grants == 1)
    );
    // Speed 1, no noise, light load: completion is the estimate.
    let t = &o.tasks[0];
    assert!((t.completed_s.unwrap() - t.submit_s - 2.0).abs() < 4.0 + 1e-6);
    assert!(o.utilization > 0.0 && o.utilization < 1.0);
}

/// A workload whose one task type "job" has `limits` (TOML keys of the type).
fn limited(agents: &str, tasks: &str, limits: &str, extra: &str) -> Workload {
    let text = format!(
        r#"
seed = 7
{extra}
{agents}
[tasks]
{tasks}
[[tasks.types]]
name = "job"
priority = [5, 5]
resources = {{ cpu = 1 }}
estimated_duration_s = [2.0, 6.0]
{limits}
"#
    );
    match Workload::parse(&text) {
        Ok(w) => w,
        Err(e) => panic!("{e}\n{text}"),
    }
}

#[test]
fn a_run_timeout_stops_every_attempt_and_the_last_fails_the_task() {
    let agents = "[[agent_types]]\nname = \"w\"\ncount = 2\ncapacity = { cpu = 4 }";
    let tasks = "count = 30\narrival = \"poisson\"\nrate_per_s = 1.0";
    // Every attempt takes 2..6 s; the limit is 1 s.
    let w = limited(agents, tasks, "run_timeout_s = 1.0\nmax_attempts = 2", "");
    let o = simulate(&w, Placer::Strategy(&LeastLoaded)).unwrap();
    assert!(o.tasks.iter().all(|t| t.failed && t.completed_s.is_none()));
    assert!(
        o.tasks
            .iter()
            .all(|t| t.run_timeouts == 2 && t.retries == 1)
    );
    let m = crate::report::StrategyMetrics::from_outcome(&o);
    assert_eq!((m.run_timeouts, m.retries, m.queue_timeouts), (60, 30, 0));
}

#[test]
fn runs_stopped_at_their_timeout_teach_adaptive_to_avoid_the_agent_type() {
    // "hang" runs every job 20x over its estimate, so past the 30 s limit; "ok" as estimated.
    // A stopped run is a failure to learning: adaptive soon sees "hang" fail and keeps to
    // "ok". Taught nothing, "hang" would stay an unseen pair, as good as "ok", forever.
    let agents = "[[agent_types]]\nname = \"hang\"\ncount = 4\ncapacity = { cpu = 4 }\n\
                  truth.job = { speed = 20.0 }\n\
                  [[agent_types]]\nname = \"ok\"\ncount = 4\ncapacity = { cpu = 4 }";
    let tasks = "count = 300\narrival = \"poisson\"\nrate_per_s = 2.0";
    let w = limited(agents, tasks, "run_timeout_s = 30.0\nmax_attempts = 3", "");
    let o = simulate(&w, Placer::Strategy(&switchyard_decision::Adaptive)).unwrap();
    let hang = o.grants_by_agent_type.get("hang").copied().unwrap_or(0);
    let ok = o.grants_by_agent_type.get("ok").copied().unwrap_or(0);
    assert!(
        hang * 10 <= ok,
        "grants: {hang} to the type whose runs time out, {ok} to the other"
    );
    assert!(o.tasks.iter().all(|t| t.completed_s.is_some()));
}

#[test]
fn adaptive_gives_work_back_to_an_agent_that_recovered_while_it_was_avoided() {
    // Two fast agents (twice as fast) among eight regular ones, at about half load: the fast
    // ones carry most of the work between them, until one is 8x slower from 100 s to 200 s.
    // Avoided since its first slow run, it runs nothing and so could never show it came back;
    // its penalty fades while it is idle, it is tried again, and the runs after its recovery
    // are about as quick as before its slump.
    let agents = "[[agent_types]]\nname = \"turbo\"\ncount = 2\ncapacity = { cpu = 4 }\n\
                  truth.job = { speed = 0.5 }\n\
                  [[agent_types]]\nname = \"regular\"\ncount = 8\ncapacity = { cpu = 4 }";
    let events = "[[events]]\nat_s = 100.0\nagent = { type = \"turbo\", index = 0 }\n\
                  kind = \"degrade\"\nspeed_factor = 8.0\n\
                  [[events]]\nat_s = 200.0\nagent = { type = \"turbo\", index = 0 }\n\
                  kind = \"degrade\"\nspeed_factor = 0.125";
    let tasks = "count = 1800\narrival = \"poisson\"\nrate_per_s = 3.0";
    let w = limited(agents, tasks, "", events);
    let o = simulate(&w, Placer::Strategy(&switchyard_decision::Adaptive)).unwrap();
    let mean_run = |from_s: f64, to_s: f64| {
        let runs: Vec<f64> = o
            .tasks
            .iter()
            .filter(|t| t.submit_s >= from_s && t.submit_s < to_s)
            .filter_map(|t| Some(t.completed_s? - t.last_start_s?))
            .collect();
        runs.iter().sum::<f64>() / runs.len().max(1) as f64
    };
    let (before, after) = (mean_run(30.0, 100.0), mean_run(350.0, 600.0));
    // Without fading (measured): 2.95 s after against 2.21 s before; with it, 2.22 s.
    assert!(
        after < 1.15 * before,
        "mean run {before:.2} s before the slump, {after:.2} s after the recovery"
    );
}

#[test]
fn a_queue_timeout_fails_what_waits_too_long_and_the_rest_completes() {
    let agents = "[[agent_types]]\nname = \"w\"\ncount = 1\ncapacity = { cpu = 1 }";
    let tasks = "count = 20\narrival = \"bursty\"\nburst_size = 20\nburst_every_s = 100.0";
    let w = limited(agents, tasks, "queue_timeout_s = 7.0", "");
    let o = simulate(&w, Placer::Strategy(&LeastLoaded)).unwrap();
    let timed_out = o.tasks.iter().filter(|t| t.queue_timed_out).count();
    let done = o.tasks.iter().filter(|t| t.completed_s.is_some()).count();
    // One agent, one task at a time, 2..6 s each: the first few finish within 7 s.
    assert!(
        done >= 2 && timed_out >= 10,
        "done {done}, timed out {timed_out}"
    );
    assert_eq!(done + timed_out, 20);
    assert!(
        o.tasks
            .iter()
            .filter(|t| t.queue_timed_out)
            .all(|t| t.grants == 0)
    );
}

#[test]
fn a_retry_goes_to_another_agent_when_one_fits() {
    // Half the fleet always fails the task, the other half never does: with the retry placed
    // away from the agent it failed on, every task completes on its second attempt at worst.
    let agents = "[[agent_types]]\nname = \"bad\"\ncount = 2\ncapacity = { cpu = 50 }\n\
                  truth.job = { failure_rate = 1.0 }\n\
                  [[agent_types]]\nname = \"good\"\ncount = 2\ncapacity = { cpu = 50 }";
    let tasks = "count = 60\narrival = \"poisson\"\nrate_per_s = 2.0";
    let w = limited(
        agents,
        tasks,
        "max_attempts = 3",
        "[retry]\nbackoff_s = 0.1",
    );
    for strategy in [&RoundRobin as &dyn Strategy, &LeastLoaded] {
        let o = simulate(&w, Placer::Strategy(strategy)).unwrap();
        assert!(
            o.tasks.iter().all(|t| t.completed_s.is_some()),
            "{}",
            strategy.name()
        );
        assert!(o.tasks.iter().all(|t| t.grants <= 3), "{}", strategy.name());
        assert!(o.tasks.iter().any(|t| t.retries > 0), "{}", strategy.name());
    }
}

/// A rate budget binds: no window of one period gets more than burst + limit, the steady state
/// gets about the limit, and a concurrency budget is never exceeded (the engine's invariant
/// stops the run otherwise); a task type over its budget's burst is refused.
#[test]
fn budgets_bind_in_the_simulator() {
    let text = r#"
seed = 3
[[budgets]]
name = "tpm"
kind = "rate"
limit = 6000
period_s = 60
burst = 200
[[budgets]]
name = "tool"
kind = "concurrency"
limit = 2
[[agent_types]]
name = "a"
count = 8
capacity = { cpu = 4 }
[tasks]
count = 300
arrival = "poisson"
rate_per_s = 5.0
[[tasks.types]]
name = "chat"
priority = [1, 10]
resources = { cpu = 1 }
estimated_duration_s = [1.0, 3.0]
budgets = { tpm = 100, tool = 1 }
usage_noise = 0.3
"#;
    let w = Workload::parse(text).unwrap();
    let outcome = simulate(&w, Placer::Strategy(&LeastLoaded)).unwrap();
    let tpm = &outcome.budgets["tpm"];
    assert!(tpm.max_drawn_share <= (6000.0 + 200.0) / 6000.0, "{tpm:?}");
    let steady = &tpm.drawn_per_period[1..tpm.drawn_per_period.len() - 1];
    assert!(
        steady.iter().all(|&d| (4500..=6200).contains(&d)),
        "{steady:?}"
    );
    assert_eq!(
        outcome
            .tasks
            .iter()
            .filter(|t| t.completed_s.is_some() || t.failed)
            .count(),
        300
    );
    let too_big = text.replace("tpm = 100,", "tpm = 201,");
    let e = Workload::parse(&too_big).unwrap_err().to_string();
    assert!(e.contains("allows 1..=200"), "{e}");
}

/// The work of one run of `w` under least-loaded (counted, not timed).
fn work_of(w: &Workload) -> Work {
    let mut engine = Engine::new(w, Placer::Strategy(&LeastLoaded));
    if let Err(e) = engine.run() {
        panic!("{e}");
    }
    engine.work
}

/// Below capacity, five times the tasks is five times the events, and the cost of each stays
/// the same: the heap holds what is in flight (it once held every task yet to arrive), and a
/// dispatch round looks at a short queue.
#[test]
fn work_per_event_stays_flat_as_a_run_grows_five_fold() {
    let fleet = "[[agent_types]]\nname = \"a\"\ncount = 20\ncapacity = { cpu = 4 }";
    let run = |n: u32| {
        let tasks = format!("count = {n}\narrival = \"poisson\"\nrate_per_s = 15.0");
        work_of(&workload(fleet, &tasks, ""))
    };
    let (short, long) = (run(1_000), run(5_000));
    assert!(long.rounds > 4 * short.rounds, "{short:?} {long:?}");
    assert!(
        long.peak_heap <= short.peak_heap * 3 / 2,
        "the heap grew with the run: {short:?} {long:?}"
    );
    let per_round = |w: Work| w.scanned as f64 / w.rounds as f64;
    assert!(
        per_round(long) <= per_round(short) * 1.5,
        "a round scans more as the run grows: {short:?} {long:?}"
    );
}

/// Overloaded, the queue grows with the run, legitimately; a dispatch round still looks at no
/// more than its window of it (it once walked the whole queue every round).
#[test]
fn a_round_scans_its_window_not_the_whole_queue() {
    let fleet = "[[agent_types]]\nname = \"a\"\ncount = 2\ncapacity = { cpu = 2 }";
    let tasks = "count = 3000\narrival = \"poisson\"\nrate_per_s = 5.0";
    let w = workload(fleet, tasks, "dispatch_window = 16");
    let work = work_of(&w);
    let outcome = match simulate(&w, Placer::Strategy(&LeastLoaded)) {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    let last = outcome
        .tasks
        .iter()
        .filter_map(|t| t.first_start_s)
        .fold(0.0, f64::max);
    assert!(last > 2.0 * 600.0, "not overloaded: last grant at {last}s");
    assert!(work.rounds > 0);
    assert!(
        work.scanned <= work.rounds * 16,
        "a round scanned past its window: {work:?}"
    );
}
