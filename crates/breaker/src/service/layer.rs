use tower_layer::Layer;

use super::CircuitBreakerService;
use crate::breaker::CircuitBreaker;
use crate::outcome::OkIsSuccess;

/// Wraps services in a [`CircuitBreakerService`] sharing one breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = OkIsSuccess> {
    breaker: CircuitBreaker,
    classify: C,
}

impl CircuitBreakerLayer {
    /// A layer recording `Ok` as success and `Err` as failure.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classify: OkIsSuccess,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Uses `classify` (a [`Classify`](crate::Classify), e.g. a closure over
    /// `&Result<Response, Error>`) to decide each response's outcome.
    pub fn with_classifier<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::with_classifier(inner, self.breaker.clone(), self.classify.clone())
    }
}
