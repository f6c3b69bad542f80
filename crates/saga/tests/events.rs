//! Event names: what a step may wait for, a request named in its event so
//! that a late answer to an earlier request changes nothing, and what a
//! step that retries after an event waits for meanwhile (nothing).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use counterfoil_saga::{
    Definition, Delivery, Error, Harness, Kind, Status, Step, StepCx, StepError, StepOutcome,
    async_trait,
};

/// Waits for `events`, then records the event that woke it in the state;
/// woken by `stale`, it retries instead.
struct Await(Vec<String>);

#[async_trait]
impl Step<Option<String>> for Await {
    fn name(&self) -> &str {
        "await"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    async fn run(&self, cx: &mut StepCx<'_, Option<String>>) -> Result<StepOutcome, StepError> {
        let woke = cx.event::<()>()?.map(|(name, ())| name.to_owned());
        if woke.as_deref() == Some("stale") {
            return Err(StepError::retry("not the answer it waits for"));
        }
        if let Some(name) = woke {
            *cx.state_mut() = Some(name);
            return Ok(StepOutcome::Done);
        }
        Ok(StepOutcome::wait(self.0.clone(), Duration::from_secs(60)))
    }
}

async fn harness(events: &[&str]) -> (Harness, Definition<Option<String>>) {
    let def = Definition::builder("events", 1)
        .step(Await(events.iter().map(|e| (*e).to_owned()).collect()))
        .build()
        .unwrap();
    let (builder, clock) = Harness::in_memory();
    let h = Harness::new(builder.register(def.clone()), clock)
        .await
        .unwrap();
    (h, def)
}

#[tokio::test]
async fn an_answer_to_an_earlier_request_finds_the_saga_not_waiting() {
    let (h, def) = harness(&["printed#job-2", "refused#job-2"]).await;
    let id = h.start(&def, "k", &None).await.unwrap();
    h.run_until_idle().await.unwrap();
    assert_eq!(h.status(id).await.unwrap(), Status::Waiting);
    // The earlier request's answer, late or delivered again: nothing changes.
    for _ in 0..3 {
        let d = h.engine().deliver(id, "printed#job-1", &()).await.unwrap();
        assert_eq!(d, Delivery::NotWaiting);
    }
    h.run_until_idle().await.unwrap();
    let rec = h.engine().get(id).await.unwrap();
    assert_eq!((rec.status, rec.attempt), (Status::Waiting, 1));
    let d = h.engine().deliver(id, "printed#job-2", &()).await.unwrap();
    assert_eq!(d, Delivery::Accepted);
    h.run_until_idle().await.unwrap();
    let rec = h.engine().get(id).await.unwrap();
    assert_eq!(rec.status, Status::Completed);
    assert_eq!(
        rec.state::<Option<String>>().unwrap().as_deref(),
        Some("printed#job-2")
    );
}

#[tokio::test]
async fn a_name_with_a_comma_or_none_is_refused() {
    let (h, def) = harness(&["a", "b"]).await;
    let id = h.start(&def, "k", &None).await.unwrap();
    h.run_until_idle().await.unwrap();
    // Stored as ",a,b,": "a,b" would otherwise match the saga's list.
    for bad in ["a,b", ""] {
        let e = h.engine().deliver(id, bad, &()).await.unwrap_err();
        assert!(matches!(e, Error::InvalidEvent(ref n) if n == bad), "{e}");
    }
    assert_eq!(h.status(id).await.unwrap(), Status::Waiting);
}

#[tokio::test]
async fn a_step_waiting_for_a_name_with_a_comma_is_parked() {
    let (h, def) = harness(&["printed", "not,printed"]).await;
    let id = h.start(&def, "k", &None).await.unwrap();
    h.run_until_idle().await.unwrap();
    let rec = h.engine().get(id).await.unwrap();
    assert_eq!(rec.status, Status::Parked);
    let reason = rec.reason.unwrap_or_default();
    assert!(
        reason.contains("invalid event name \"not,printed\""),
        "{reason}"
    );
    assert!(rec.wait_events.is_empty(), "{:?}", rec.wait_events);
}

/// What `StepError::Retry` says: until the step runs again the saga waits for
/// nothing, so an answer delivered during the backoff is not taken; the step
/// waits again when it runs, and the next delivery wakes it.
#[tokio::test]
async fn a_step_that_retries_after_an_event_waits_for_nothing_until_it_runs_again() {
    let (h, def) = harness(&["go", "stale"]).await;
    let id = h.start(&def, "k", &None).await.unwrap();
    h.run_until_idle().await.unwrap();
    let d = h.engine().deliver(id, "stale", &()).await.unwrap();
    assert_eq!(d, Delivery::Accepted);
    h.run_until_idle().await.unwrap();
    let rec = h.engine().get(id).await.unwrap();
    assert_eq!(rec.status, Status::Running, "in its backoff");
    assert!(rec.wait_events.is_empty(), "{:?}", rec.wait_events);
    let d = h.engine().deliver(id, "go", &()).await.unwrap();
    assert_eq!(d, Delivery::NotWaiting);
    h.advance(Duration::from_secs(3600));
    h.run_until_idle().await.unwrap();
    assert_eq!(h.status(id).await.unwrap(), Status::Waiting);
    let d = h.engine().deliver(id, "go", &()).await.unwrap();
    assert_eq!(d, Delivery::Accepted);
    h.run_until_idle().await.unwrap();
    let rec = h.engine().get(id).await.unwrap();
    assert_eq!(rec.status, Status::Completed);
    assert_eq!(
        rec.state::<Option<String>>().unwrap().as_deref(),
        Some("go")
    );
}
