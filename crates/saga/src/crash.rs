//! Crash injection points, used by the test harness to kill a worker at every boundary.

use std::fmt::Debug;

use uuid::Uuid;

/// A boundary in a step's life where a worker may die.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CrashPoint {
    /// After the intent is recorded, before `run` starts its effect.
    BeforeEffect,
    /// After `run` returned, before its checkpoint commits.
    AfterEffect,
    /// Before `compensate` runs.
    BeforeCompensation,
    /// After `compensate` returned, before its checkpoint commits (mid-compensation).
    AfterCompensation,
}

/// Decides whether the worker dies at a boundary; a dying worker writes nothing more and
/// keeps its lease until it lapses.
pub trait CrashHook: Send + Sync + Debug {
    /// Whether to die at `point` of `step` (attempt starting at 1) of saga `saga_id`.
    fn crash(&self, saga_id: Uuid, step: &str, attempt: u32, point: CrashPoint) -> bool;
}

fn _obj_safe(_: &dyn CrashHook) {}
