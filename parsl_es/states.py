"""States of event ranges and merges, what an attempt can come to, and the retry budget.

One place for the state machine: the ledger stores these values, the engine
acts on them, and ``after_outcome`` is the only function that decides what an
attempt's outcome does to its range. The budget follows what big machines do:
a payload failure costs one of the range's ``attempts``; a worker, node or
block lost under it, or a range presumed hung, is not the range's fault and is
counted apart (up to ``lost_factor`` times ``attempts``, so a range that keeps
killing its workers still ends); a permanent failure is fatal at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RangeState(StrEnum):
    """Where an event range stands (a range with no ledger row is ``READY``)."""

    READY = "ready"
    RUNNING = "running"
    DONE = "done"
    MERGED = "merged"
    FAILED = "failed"  # an attempt failed; it will be retried
    FATAL = "fatal"  # out of attempts, or a permanent failure


class MergeState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Verdict(StrEnum):
    """A validation's verdict on a merged file or on the campaign."""

    PASSED = "passed"
    FAILED = "failed"


class FailureKind(StrEnum):
    """What a failed range attempt was, as the worker classifies it."""

    PAYLOAD = "payload"  # the payload raised: costs an attempt
    PERMANENT = "permanent"  # will never succeed (FatalPayloadError): fatal at once
    INFRASTRUCTURE = "infrastructure"  # I/O error, lost worker, node or block
    TIMEOUT = "timeout"  # ran far longer than ranges do: presumed hung
    NO_SPACE = "no_space"  # the disk is full: the campaign stops


class Outcome(StrEnum):
    """What one attempt of one range came to, as the ledger records it."""

    DONE = "done"
    FAILED = "failed"  # a payload failure
    FATAL = "fatal"  # a permanent failure
    LOST = "lost"  # the worker, its pool, node or block went away
    TIMEOUT = "timeout"  # given up on by the driver or stopped by the worker's deadline
    LATE = "late"  # the result of an attempt already given up on: recorded, never applied
    DAMAGED = "damaged"  # its file was found missing or damaged after it was done


#: The outcome each kind of worker-reported failure is recorded as.
OUTCOME_OF_FAILURE = {
    FailureKind.PAYLOAD: Outcome.FAILED,
    FailureKind.PERMANENT: Outcome.FATAL,
    FailureKind.INFRASTRUCTURE: Outcome.LOST,
    FailureKind.NO_SPACE: Outcome.LOST,
    FailureKind.TIMEOUT: Outcome.TIMEOUT,
}

#: Which range states may follow which (resume and damaged files go back to READY).
RANGE_TRANSITIONS: dict[RangeState, frozenset[RangeState]] = {
    RangeState.READY: frozenset({RangeState.RUNNING}),
    RangeState.RUNNING: frozenset(
        {RangeState.DONE, RangeState.FAILED, RangeState.FATAL, RangeState.READY}
    ),
    RangeState.DONE: frozenset({RangeState.MERGED, RangeState.READY}),
    RangeState.MERGED: frozenset({RangeState.DONE, RangeState.READY}),
    RangeState.FAILED: frozenset({RangeState.RUNNING, RangeState.READY}),
    RangeState.FATAL: frozenset({RangeState.READY}),  # a resume gives fatal ranges a new budget
}


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How many attempts a range (or a merge) gets before it is fatal."""

    attempts: int
    lost_factor: int = 3

    @property
    def max_lost(self) -> int:
        """Attempts lost with their worker, or timed out, before the range is fatal."""
        return self.attempts * self.lost_factor


@dataclass(frozen=True, slots=True)
class AttemptCounts:
    """A range's spent budget: payload failures, and attempts lost or timed out."""

    failures: int = 0
    lost: int = 0


def after_outcome(
    outcome: Outcome, counts: AttemptCounts, budget: RetryBudget
) -> tuple[RangeState, AttemptCounts]:
    """The state a running range moves to after one attempt's outcome, and its new counts."""
    if outcome is Outcome.DONE:
        return RangeState.DONE, counts
    if outcome is Outcome.FATAL:
        return RangeState.FATAL, AttemptCounts(counts.failures + 1, counts.lost)
    if outcome is Outcome.FAILED:
        spent = AttemptCounts(counts.failures + 1, counts.lost)
        fatal = spent.failures >= budget.attempts
        return (RangeState.FATAL if fatal else RangeState.FAILED), spent
    if outcome in (Outcome.LOST, Outcome.TIMEOUT):
        spent = AttemptCounts(counts.failures, counts.lost + 1)
        fatal = spent.lost >= budget.max_lost
        return (RangeState.FATAL if fatal else RangeState.FAILED), spent
    raise ValueError(f"outcome {outcome} does not move a running range")


def check_transition(old: RangeState, new: RangeState) -> None:
    """Refuse a move the state machine does not allow (the caller lost track)."""
    if new not in RANGE_TRANSITIONS[old]:
        raise RuntimeError(f"a range cannot go from {old} to {new}")
