//! How a call's result counts for the breaker.

/// How a finished call counts: as a success, as a failure, or not at all.
///
/// A declined card or a validation error is the caller's problem, not the provider's: classify it
/// [`Outcome::Ignored`] (or [`Outcome::Success`]) so it cannot open the breaker. A timeout, a
/// refused connection or a 5xx is [`Outcome::Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency worked.
    Success,
    /// The dependency failed; counts towards the failure rate.
    Failure,
    /// Neither: not recorded; a half-open probe permit is given back.
    Ignored,
}

/// Decides the [`Outcome`] of a result; closures `Fn(&Result<T, E>) -> Outcome` are classifiers.
pub trait Classify<T, E> {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct OkIsSuccess;

impl<T, E> Classify<T, E> for OkIsSuccess {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_and_default_classify() {
        let ok: Result<u8, u8> = Ok(1);
        let err: Result<u8, u8> = Err(4);
        assert_eq!(OkIsSuccess.classify(&ok), Outcome::Success);
        assert_eq!(OkIsSuccess.classify(&err), Outcome::Failure);
        let declined_is_ignored = |r: &Result<u8, u8>| match r {
            Err(4) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        };
        assert_eq!(declined_is_ignored.classify(&err), Outcome::Ignored);
    }
}
