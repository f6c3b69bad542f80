//! `DefinitionBuilder::on_span`: the hook sees every run's `saga` span,
//! before it is entered, with the saga's stored state; the step spans are
//! its children. This is how a saga joins the trace of the request that
//! started it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use counterfoil_saga::{
    Definition, Engine, Harness, Kind, SagaState, Status, Step, StepCx, StepError, StepOutcome,
    Wake, async_trait,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    traceparent: String,
}

/// Spans as they are created: (id, name, parent id).
type Created = Arc<Mutex<Vec<(u64, &'static str, Option<u64>)>>>;

/// What the hook saw: (the span's id, the state's traceparent).
type Seen = Arc<Mutex<Vec<(Option<u64>, String)>>>;

struct Record(Created);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Record {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        self.0
            .lock()
            .push((id.into_u64(), attrs.metadata().name(), parent));
    }
}

/// Runs once, then waits for an event so the saga is claimed twice.
struct Pay;

#[async_trait]
impl<S: SagaState> Step<S> for Pay {
    fn name(&self) -> &str {
        "pay"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    async fn run(&self, cx: &mut StepCx<'_, S>) -> Result<StepOutcome, StepError> {
        match cx.wake() {
            Wake::Event(_) => Ok(StepOutcome::Done),
            _ => Ok(StepOutcome::wait(["paid"], Duration::from_secs(60))),
        }
    }
}

#[tokio::test]
async fn the_hook_sees_each_runs_saga_span_and_state_and_steps_are_its_children() {
    let created = Created::default();
    let subscriber = tracing_subscriber::registry().with(Record(created.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let seen = Seen::default();
    let hook_seen = seen.clone();
    let def = Definition::<Order>::builder("order", 1)
        .step(Pay)
        .on_span(move |span, order| {
            hook_seen
                .lock()
                .push((span.id().map(|i| i.into_u64()), order.traceparent.clone()));
        })
        .build()
        .unwrap();
    let (builder, clock) = Harness::in_memory();
    let h = Harness::new(builder.register(def.clone()), clock)
        .await
        .unwrap();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let id = h
        .start(
            &def,
            "k1",
            &Order {
                traceparent: tp.into(),
            },
        )
        .await
        .unwrap();
    h.run_until_idle().await.unwrap();
    assert_eq!(h.status(id).await.unwrap(), Status::Waiting);
    h.engine()
        .deliver(id, "paid", &serde_json::json!({}))
        .await
        .unwrap();
    h.run_until_idle().await.unwrap();
    assert_eq!(h.status(id).await.unwrap(), Status::Completed);

    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 2, "one call per run: {seen:?}");
    assert!(seen.iter().all(|(_, t)| t == tp), "{seen:?}");
    let created = created.lock().clone();
    let saga_spans: Vec<u64> = created
        .iter()
        .filter(|(_, n, _)| *n == "saga")
        .map(|(i, _, _)| *i)
        .collect();
    for (span, _) in &seen {
        assert!(saga_spans.contains(&span.unwrap()), "{created:?}");
    }
    let steps: Vec<_> = created
        .iter()
        .filter(|(_, n, _)| *n == "saga_step")
        .collect();
    assert_eq!(steps.len(), 2, "{created:?}");
    for (_, _, parent) in steps {
        assert!(
            seen.iter().any(|(s, _)| s == parent),
            "a step span is a child of a hooked saga span: {created:?}"
        );
    }
}

#[test]
fn a_definition_without_a_hook_says_so() {
    let def = Definition::<Order>::builder("order", 1).step(Pay);
    assert!(format!("{def:?}").contains("on_span: false"));
}

/// What a later version of the code might expect under the same name.
#[derive(Debug, Serialize, Deserialize)]
struct Strict {
    amount: u64,
}

#[tokio::test]
async fn a_state_that_does_not_decode_skips_the_hook() {
    // Every test here that makes spans runs under a subscriber that wants
    // them all: tests run in parallel threads, and a thread without one
    // could have the span callsites cached as uninteresting for the other.
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
    let (builder, clock) = Harness::in_memory();
    let as_order = Definition::<Order>::builder("order", 1)
        .step(Pay)
        .build()
        .unwrap();
    let h = Harness::new(builder.register(as_order.clone()), clock)
        .await
        .unwrap();
    let id = h
        .start(
            &as_order,
            "k1",
            &Order {
                traceparent: "x".into(),
            },
        )
        .await
        .unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let strict = Definition::<Strict>::builder("order", 1)
        .step(Pay)
        .on_span(move |_, _| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let other = Engine::builder(h.store().clone())
        .register(strict)
        .build()
        .await
        .unwrap();
    let _ = other.run_until_idle().await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_ne!(
        h.status(id).await.unwrap(),
        Status::Completed,
        "the run did not go on"
    );
}
