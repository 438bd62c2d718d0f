"""The campaign ledger: durable state of every event range and merge, in SQLite.

It is the source of truth for ``resume`` and ``status``. One job per module:
``schema`` (tables and numbered migrations), ``core`` (opening, transactions,
metadata), ``ranges``, ``recovery`` and ``merges`` (the transitions the engine makes),
``models`` (frozen rows),
``reads`` (typed read models). ``Ledger`` puts them together; nothing outside
this package runs SQL on a ledger.
"""

from __future__ import annotations

from pathlib import Path

from parsl_es.errors import UserError
from parsl_es.ledger.core import LEDGER_NAME
from parsl_es.ledger.merges import MergeWrites
from parsl_es.ledger.models import (
    MERGE_STATES,
    RANGE_STATES,
    AttemptRow,
    RangeRow,
    ReportRows,
    ResumeState,
    Run,
    Summary,
    TaskRow,
    TransformRow,
)
from parsl_es.ledger.ranges import RangeWrites
from parsl_es.ledger.recovery import Recovery
from parsl_es.ledger.schema import SCHEMA_VERSION
from parsl_es.ledger.views import CampaignViews


class Ledger(RangeWrites, Recovery, MergeWrites, CampaignViews):
    """One campaign's SQLite ledger. Owned by one driver; readable by anyone.

    ``with Ledger.open(path) as ledger: ...`` closes it at the end.
    """


__all__ = [
    "LEDGER_NAME",
    "MERGE_STATES",
    "RANGE_STATES",
    "SCHEMA_VERSION",
    "AttemptRow",
    "Ledger",
    "RangeRow",
    "ReportRows",
    "ResumeState",
    "Run",
    "Summary",
    "TaskRow",
    "TransformRow",
    "open_campaign",
]


def open_campaign(output: str | Path, readonly: bool = False) -> Ledger:
    """The ledger of the campaign whose output directory is ``output``.

    Here, not with the engine's entry points: ``es-run status`` needs this and the
    ledger only (importing the engine, campaigns and payloads cost it 0.3 s).
    """
    out = Path(output)
    if not out.is_dir():
        raise UserError("no such campaign output directory", file=out)
    return Ledger.open(out / LEDGER_NAME, readonly=readonly)
