//! Saga definitions: a name, a version, a state type and an ordered list of steps.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::step::{Kind, Step};
use crate::store::NewSaga;
use crate::{BuildError, Error};

/// What a saga's state must be: serde JSON round-trippable and shareable across tasks.
pub trait SagaState: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> SagaState for T {}

/// A validated saga definition over state `S`. Cheap to clone.
pub struct Definition<S> {
    pub(crate) inner: Arc<DefinitionInner<S>>,
}

pub(crate) struct DefinitionInner<S> {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) steps: Vec<Box<dyn Step<S>>>,
    pub(crate) pivot: Option<usize>,
    pub(crate) on_span: Option<SpanHook<S>>,
}

/// See [`DefinitionBuilder::on_span`].
pub(crate) type SpanHook<S> = Box<dyn Fn(&tracing::Span, &S) + Send + Sync>;

impl<S> Clone for Definition<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Send + Sync + 'static> fmt::Debug for Definition<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Definition")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field(
                "steps",
                &self
                    .inner
                    .steps
                    .iter()
                    .map(|s| (s.name().to_owned(), s.kind()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<S: SagaState> Definition<S> {
    /// Starts a definition of saga `name` at `version`.
    pub fn builder(name: impl Into<String>, version: u32) -> DefinitionBuilder<S> {
        DefinitionBuilder {
            name: name.into(),
            version,
            steps: Vec::new(),
            on_span: None,
        }
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The definition's version.
    pub fn version(&self) -> u32 {
        self.inner.version
    }

    /// Step names in order.
    pub fn step_names(&self) -> Vec<&str> {
        self.inner.steps.iter().map(|s| s.name()).collect()
    }

    /// Index of the pivot step, if any.
    pub fn pivot(&self) -> Option<usize> {
        self.inner.pivot
    }

    pub(crate) fn new_saga(&self, key: &str, state: &S, now: i64) -> Result<NewSaga, Error> {
        Ok(NewSaga {
            id: Uuid::new_v4(),
            name: self.inner.name.clone(),
            version: self.inner.version,
            key: key.to_owned(),
            state: serde_json::to_string(state)?,
            now,
            lease_until: 0,
        })
    }
}

/// Collects the steps of a [`Definition`].
pub struct DefinitionBuilder<S> {
    name: String,
    version: u32,
    steps: Vec<Box<dyn Step<S>>>,
    on_span: Option<SpanHook<S>>,
}

impl<S> fmt::Debug for DefinitionBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefinitionBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("steps", &self.steps.len())
            .field("on_span", &self.on_span.is_some())
            .finish()
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && !n.contains([',', '@'])
}

impl<S: SagaState> DefinitionBuilder<S> {
    /// Appends a step.
    pub fn step(mut self, step: impl Step<S>) -> Self {
        self.steps.push(Box::new(step));
        self
    }

    /// Calls `hook` with the `saga` span of every run of a saga (each time
    /// an engine claims it, before the span is entered) and the saga's state
    /// as stored. The `saga_step` spans are children of that span.
    ///
    /// This is where a saga joins the trace of the request that started it,
    /// kept in its state: with `tracing-opentelemetry`, the hook sets the
    /// span's parent from a stored W3C `traceparent`, so every step (and
    /// whatever the steps call) appears in the caller's trace however many
    /// processes and restarts the saga goes through. It may also record
    /// fields declared on the span. The crate itself depends on `tracing`
    /// only.
    ///
    /// ```
    /// use counterfoil_saga::Definition;
    /// # use counterfoil_saga::{Kind, Step, StepCx, StepError, StepOutcome};
    /// # struct Charge;
    /// # #[async_trait::async_trait]
    /// # impl Step<Order> for Charge {
    /// #     fn name(&self) -> &str { "charge" }
    /// #     fn kind(&self) -> Kind { Kind::Retriable }
    /// #     async fn run(&self, _: &mut StepCx<'_, Order>) -> Result<StepOutcome, StepError> {
    /// #         Ok(StepOutcome::Done)
    /// #     }
    /// # }
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Order {
    ///     traceparent: Option<String>,
    /// }
    ///
    /// let def = Definition::<Order>::builder("order", 1)
    ///     .step(Charge)
    ///     .on_span(|span, order| {
    ///         // e.g. `span.set_parent(extract(order.traceparent))` with
    ///         // tracing-opentelemetry's `OpenTelemetrySpanExt`.
    ///         let _ = (span, &order.traceparent);
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = def;
    /// ```
    ///
    /// The state is decoded once more per run for the hook; a state that
    /// does not decode skips the hook (the run itself then reports it).
    pub fn on_span(mut self, hook: impl Fn(&tracing::Span, &S) + Send + Sync + 'static) -> Self {
        self.on_span = Some(Box::new(hook));
        self
    }

    /// Validates the definition.
    ///
    /// # Errors
    /// [`BuildError::CompensatableAfterPivot`] when a compensatable step follows the pivot;
    /// [`BuildError::TwoPivots`], [`BuildError::DuplicateStep`], [`BuildError::NoSteps`],
    /// [`BuildError::InvalidName`] for the other mistakes.
    pub fn build(self) -> Result<Definition<S>, BuildError> {
        if !valid_name(&self.name) {
            return Err(BuildError::InvalidName(self.name));
        }
        if self.steps.is_empty() {
            return Err(BuildError::NoSteps(self.name));
        }
        let mut seen = HashSet::new();
        let mut pivot: Option<usize> = None;
        for (i, s) in self.steps.iter().enumerate() {
            if !valid_name(s.name()) {
                return Err(BuildError::InvalidName(s.name().to_owned()));
            }
            if !seen.insert(s.name().to_owned()) {
                return Err(BuildError::DuplicateStep(s.name().to_owned()));
            }
            match (s.kind(), pivot) {
                (Kind::Pivot, Some(p)) => {
                    return Err(BuildError::TwoPivots(
                        self.steps[p].name().to_owned(),
                        s.name().to_owned(),
                    ));
                }
                (Kind::Pivot, None) => pivot = Some(i),
                (Kind::Compensatable, Some(p)) => {
                    return Err(BuildError::CompensatableAfterPivot {
                        step: s.name().to_owned(),
                        pivot: self.steps[p].name().to_owned(),
                    });
                }
                _ => {}
            }
        }
        Ok(Definition {
            inner: Arc::new(DefinitionInner {
                name: self.name,
                version: self.version,
                steps: self.steps,
                pivot,
                on_span: self.on_span,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StepCx, StepError, StepOutcome};
    use async_trait::async_trait;

    struct S(&'static str, Kind);

    #[async_trait]
    impl Step<u32> for S {
        fn name(&self) -> &str {
            self.0
        }
        fn kind(&self) -> Kind {
            self.1
        }
        async fn run(&self, _cx: &mut StepCx<'_, u32>) -> Result<StepOutcome, StepError> {
            Ok(StepOutcome::Done)
        }
    }

    #[test]
    fn rejects_compensatable_after_pivot() {
        let e = Definition::<u32>::builder("p", 1)
            .step(S("a", Kind::Compensatable))
            .step(S("b", Kind::Pivot))
            .step(S("c", Kind::Compensatable))
            .build()
            .unwrap_err();
        assert_eq!(
            e,
            BuildError::CompensatableAfterPivot {
                step: "c".into(),
                pivot: "b".into()
            }
        );
    }

    #[test]
    fn rejects_other_mistakes() {
        let two = Definition::<u32>::builder("p", 1)
            .step(S("a", Kind::Pivot))
            .step(S("b", Kind::Pivot))
            .build();
        assert!(matches!(two, Err(BuildError::TwoPivots(..))));
        let dup = Definition::<u32>::builder("p", 1)
            .step(S("a", Kind::Retriable))
            .step(S("a", Kind::Retriable))
            .build();
        assert!(matches!(dup, Err(BuildError::DuplicateStep(_))));
        assert!(matches!(
            Definition::<u32>::builder("p", 1).build(),
            Err(BuildError::NoSteps(_))
        ));
        assert!(matches!(
            Definition::<u32>::builder("a@b", 1)
                .step(S("a", Kind::Retriable))
                .build(),
            Err(BuildError::InvalidName(_))
        ));
    }

    #[test]
    fn accepts_the_payment_shape() {
        let d = Definition::<u32>::builder("payment", 1)
            .step(S("authorize", Kind::Compensatable))
            .step(S("capture", Kind::Pivot))
            .step(S("fiscalize", Kind::Retriable))
            .step(S("notify", Kind::Retriable))
            .build()
            .unwrap();
        assert_eq!(d.pivot(), Some(1));
        assert_eq!(
            d.step_names(),
            ["authorize", "capture", "fiscalize", "notify"]
        );
    }
}
