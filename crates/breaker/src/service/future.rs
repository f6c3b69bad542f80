use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::error::{Error, Rejected};
use crate::outcome::Classify;
use crate::permit::OwnedPermit;

pin_project! {
    /// The response future of a [`CircuitBreakerService`](super::CircuitBreakerService).
    ///
    /// Dropping it before it completes records nothing and gives a half-open probe permit back.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Admitted {
            #[pin]
            future: F,
            permit: Option<OwnedPermit>,
            classify: C,
        },
        Rejected {
            rejected: Option<Rejected>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn admitted(future: F, permit: OwnedPermit, classify: C) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                permit: Some(permit),
                classify,
            },
        }
    }

    pub(crate) fn rejected(rejected: Rejected) -> Self {
        Self {
            kind: Kind::Rejected {
                rejected: Some(rejected),
            },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted {
                future,
                permit,
                classify,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(p) = permit.take() {
                    p.record(classify.classify(&result));
                }
                Poll::Ready(result.map_err(Error::Inner))
            }
            KindProj::Rejected { rejected } => match rejected.take() {
                Some(r) => Poll::Ready(Err(Error::Rejected(r))),
                None => Poll::Pending,
            },
        }
    }
}
