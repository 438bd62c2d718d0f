"""Where ``es-run`` prints, and its exit codes: shared by its command modules."""

from __future__ import annotations

from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # (a run's own exit codes: running.OUTCOMES)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
