//! Property test: random failure, crash and timing schedules over many sagas.
//!
//! Every saga must end completed, compensated, failed, or parked with a reason; no effect is
//! applied twice; no compensation runs for an effect that did not happen; nothing is
//! compensated across a committed pivot; two sagas never hold one printer at once.
//!
//! Cases default to 256; set `PROPTEST_CASES=5000` for a long run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use counterfoil_saga::conformance::{
    Behavior, EffectRows, MemoryRows, TestState, World, payment_saga,
};
use counterfoil_saga::{
    CrashPoint, Engine, Harness, InMemorySagaStore, ManualClock, Resolution, Status,
};
use proptest::prelude::*;

const STEPS: [&str; 5] = ["authorize", "reserve", "capture", "print", "notify"];

#[derive(Debug, Clone)]
enum Action {
    Start,
    Run,
    Advance(u64),
    Deliver(usize),
    Cancel(usize),
}

#[derive(Debug, Clone)]
struct Case {
    /// Per saga, per step: scripted attempts.
    scripts: Vec<Vec<Vec<Behavior>>>,
    comp_failures: Vec<(usize, u32)>,
    crashes: Vec<(usize, u32, CrashPoint)>,
    actions: Vec<Action>,
    reconciles: bool,
    print_waits: bool,
    printers: Vec<u8>,
}

fn behavior(step: usize) -> BoxedStrategy<Behavior> {
    if step == 3 {
        // The printing step holds a printer through its wait; it only retries or defers
        // before succeeding, so the world can track who holds the printer.
        prop_oneof![Just(Behavior::Retry), Just(Behavior::Defer)].boxed()
    } else {
        prop_oneof![
            Just(Behavior::Ok),
            Just(Behavior::Retry),
            Just(Behavior::Fail),
            Just(Behavior::InDoubtApplied),
            Just(Behavior::InDoubtNotApplied),
            Just(Behavior::Defer),
        ]
        .boxed()
    }
}

fn script() -> impl Strategy<Value = Vec<Vec<Behavior>>> {
    (0..5usize)
        .map(|s| prop::collection::vec(behavior(s), 0..if s == 3 { 3 } else { 4 }))
        .collect::<Vec<_>>()
}

fn point() -> impl Strategy<Value = CrashPoint> {
    prop_oneof![
        Just(CrashPoint::BeforeEffect),
        Just(CrashPoint::AfterEffect),
        Just(CrashPoint::BeforeCompensation),
        Just(CrashPoint::AfterCompensation),
    ]
}

fn action(n: usize) -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::Start),
        3 => Just(Action::Run),
        2 => (0u64..40_000).prop_map(Action::Advance),
        1 => (0..n).prop_map(Action::Deliver),
        1 => (0..n).prop_map(Action::Cancel),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..6).prop_flat_map(|n| {
        (
            prop::collection::vec(script(), n),
            prop::collection::vec((0usize..2, 0u32..5), 0..3),
            prop::collection::vec((0usize..5, 1u32..3, point()), 0..4),
            prop::collection::vec(action(n), 0..25),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(0u8..2, n),
        )
            .prop_map(
                |(scripts, comp_failures, crashes, actions, reconciles, print_waits, printers)| {
                    Case {
                        scripts,
                        comp_failures,
                        crashes,
                        actions,
                        reconciles,
                        print_waits,
                        printers,
                    }
                },
            )
    })
}

async fn check(case: Case) -> Result<(), TestCaseError> {
    let clock = ManualClock::default();
    let store = InMemorySagaStore::with_clock(Arc::new(clock.clone()));
    let rows: Arc<dyn EffectRows> = Arc::new(MemoryRows(store.clone()));
    let world = Arc::new(World::default());
    let reconciles = case.reconciles;
    let def = payment_saga(&world, &rows, case.print_waits, |s| {
        s.reconciles = reconciles
    });
    let h = Harness::new(
        Engine::builder(Arc::new(store))
            .register(def.clone())
            .lease(Duration::from_secs(30))
            .resource_poll(Duration::from_secs(5)),
        clock,
    )
    .await
    .unwrap();
    let n = case.scripts.len();
    let keys: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    for (i, script) in case.scripts.iter().enumerate() {
        for (s, attempts) in script.iter().enumerate() {
            world.script(&keys[i], STEPS[s], attempts);
        }
    }
    for (i, (step, times)) in case.comp_failures.iter().enumerate() {
        if let Some(k) = keys.get(i) {
            world.fail_compensation(k, STEPS[*step], *times);
        }
    }
    for (step, attempt, p) in &case.crashes {
        h.crash_at(STEPS[*step], *attempt, *p);
    }

    let mut ids = Vec::new();
    let mut actions = case.actions.clone();
    // Whatever the schedule, every saga is started at the end.
    actions.extend(std::iter::repeat_n(Action::Start, n));
    for a in actions {
        match a {
            Action::Start => {
                if ids.len() < n {
                    let i = ids.len();
                    let st = TestState {
                        key: keys[i].clone(),
                        printer: Some(format!("printer-{}", case.printers[i])),
                        ..TestState::default()
                    };
                    ids.push(h.start(&def, &keys[i], &st).await.unwrap());
                }
            }
            Action::Run => {
                h.run_until_idle().await.unwrap();
            }
            Action::Advance(ms) => h.advance(Duration::from_millis(ms)),
            Action::Deliver(i) => {
                if let Some(id) = ids.get(i) {
                    h.engine().deliver(*id, "printed", &i).await.unwrap();
                }
            }
            Action::Cancel(i) => {
                if let Some(id) = ids.get(i) {
                    let _ = h.engine().cancel(*id).await;
                }
            }
        }
    }
    // Sagas queued for a printer whose holder parked in doubt stay queued until the
    // operator answers: the device is in an unknown state. The operator answers in-doubt
    // parks with the truth, round after round.
    for _ in 0..8 {
        h.settle(300).await.unwrap();
        let mut answered = false;
        for id in &ids {
            let rec = h.engine().get(*id).await.unwrap();
            if rec.status == Status::Parked
                && rec.in_flight
                && rec.phase == counterfoil_saga::Phase::Forward
            {
                let step = STEPS[rec.cursor as usize];
                let r = if world.applied(*id, step) > 0 {
                    Resolution::Applied
                } else {
                    Resolution::NotApplied
                };
                h.engine().resolve(*id, r).await.unwrap();
                answered = true;
                if step == "print" && r == Resolution::Applied {
                    let st: TestState = rec.state().unwrap();
                    world.leave(st.printer.as_deref().unwrap_or_default(), *id);
                }
            }
        }
        if !answered {
            break;
        }
    }
    let left = h.settle(2_000).await.unwrap();
    prop_assert!(left.is_empty(), "unsettled: {left:?}");

    prop_assert!(world.violations().is_empty(), "{:?}", world.violations());
    for id in &ids {
        let rec = h.engine().get(*id).await.unwrap();
        let captured = world.applied(*id, "capture") > 0;
        let compensated =
            world.compensated(*id, "authorize") + world.compensated(*id, "reserve") > 0;
        prop_assert!(
            !(captured && compensated),
            "compensated across the pivot: {rec:?}"
        );
        for s in STEPS {
            prop_assert!(world.applied(*id, s) <= 1);
        }
        match rec.status {
            Status::Completed => {
                for s in STEPS {
                    prop_assert_eq!(world.applied(*id, s), 1, "{} in {:?}", s, rec);
                }
                let st: TestState = rec.state().unwrap();
                // An operator's "applied" cannot replay the step's state changes.
                prop_assert!(st.done.len() == 5 || !reconciles, "{:?}", st);
            }
            Status::Compensated | Status::Failed => {
                prop_assert!(!captured);
                for s in ["authorize", "reserve"] {
                    prop_assert_eq!(world.applied(*id, s), world.compensated(*id, s), "{}", s);
                }
                if rec.status == Status::Failed {
                    prop_assert!(world.applied(*id, "authorize") == 0);
                }
            }
            Status::Parked => {
                prop_assert!(rec.reason.as_deref().is_some_and(|r| !r.is_empty()));
            }
            other => prop_assert!(false, "not settled: {other:?}"),
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn random_schedules_keep_the_promises(case in case()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(case))?;
    }
}
