//! The breaker as tower middleware.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use counterfoil_breaker::service::Error;
use counterfoil_breaker::{CircuitBreaker, CircuitBreakerLayer, Outcome, State, Window};
use tower::{Layer, Service, ServiceExt, service_fn};

#[derive(Debug, PartialEq)]
struct Status(u16);

fn upstream() -> impl Service<u16, Response = Status, Error = std::io::Error, Future: Send> + Clone
{
    service_fn(|code: u16| async move {
        if code == 0 {
            Err(std::io::Error::other("connection refused"))
        } else {
            Ok(Status(code))
        }
    })
}

fn classify(r: &Result<Status, std::io::Error>) -> Outcome {
    match r {
        Ok(Status(500..)) | Err(_) => Outcome::Failure,
        Ok(Status(400..)) => Outcome::Ignored,
        Ok(_) => Outcome::Success,
    }
}

#[tokio::test]
async fn five_hundreds_trip_four_hundreds_do_not() {
    let breaker = CircuitBreaker::builder()
        .window(Window::ConsecutiveFailures(3))
        .build()
        .unwrap();
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .with_classifier(classify)
        .layer(upstream());
    for code in [503, 0, 402, 402, 200, 503, 503] {
        let _ = svc.ready().await.unwrap().call(code).await;
    }
    assert_eq!(breaker.state(), State::Closed);
    let _ = svc.ready().await.unwrap().call(500).await;
    assert_eq!(breaker.state(), State::Open);
    match svc.ready().await.unwrap().call(200).await {
        Err(Error::Rejected(r)) => {
            assert_eq!(r.state(), State::Open);
            assert!(r.retry_after().unwrap() > Duration::from_secs(29));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn dropping_a_response_future_releases_the_probe() {
    let breaker = CircuitBreaker::builder()
        .half_open_calls(1)
        .build()
        .unwrap();
    breaker.open_for(Duration::ZERO);
    let hang = service_fn(|_: ()| std::future::pending::<Result<(), std::io::Error>>());
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(hang);
    let fut = svc.ready().await.unwrap().call(());
    assert_eq!(breaker.snapshot().probes_in_flight, 1);
    drop(fut);
    assert_eq!(breaker.snapshot().probes_in_flight, 0);
    let mut ok = CircuitBreakerLayer::new(breaker.clone()).layer(upstream());
    assert_eq!(
        ok.ready().await.unwrap().call(200).await.unwrap(),
        Status(200)
    );
    assert_eq!(breaker.state(), State::Closed);
}
