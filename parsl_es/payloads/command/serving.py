"""``mode: service`` of the command payload: one long-lived transform per worker process.

``ServiceMode`` is the part of ``CommandPayload`` that hands ranges to the
worker's transform over the event-service protocol (``protocol``) and keeps it
alive (``service.Transform``): started at the worker's first range, restarted
after it dies, hangs or misbehaves, ended with the worker. It uses the payload's
own ``params``, environment, executable check and event counting.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
from pathlib import Path

from parsl_es.containers import container_argv
from parsl_es.event_service import (
    ProtocolError,
    RangeDone,
    RangeFailed,
    RangeMessage,
    Ready,
    ranges_line,
)
from parsl_es.failures import RangeTimeout
from parsl_es.payloads.base import FatalPayloadError, PayloadError, TransformLost
from parsl_es.payloads.command.params import command_input, range_message, service_values
from parsl_es.payloads.command.process import InitDeaths, _absolute, _campaign_of, _tail
from parsl_es.payloads.command.service import (
    CHANNEL_ENV,
    ServiceStats,
    Transform,
    TransformCannotStart,
    TransformGone,
    TransformSilent,
)
from parsl_es.payloads.command.templates import render
from parsl_es.ranges import EventRange
from parsl_es.records import TransformStart

#: Where service-mode transforms log and work, in the engine's layout (``<output>/logs/service``).
SERVICE_DIR = "service"

logger = logging.getLogger(__name__)


class ServiceMode:
    """The service-mode half of ``CommandPayload`` (a mixin: it uses the payload's
    ``params``, ``_environment``, ``_check_executable`` and ``_count_events``)."""

    def _init_service(self) -> None:
        self._transform: Transform | None = None  # started on first use
        # the campaign seed and the {input} it was started with
        self._transform_key: tuple[int, str] | None = None
        self._earlier_starts: list[TransformStart] = []  # of transforms ended for a new key
        self._init_deaths = InitDeaths()
        self._broken: str | None = None  # why this worker's transform cannot start

    def service_stats(self) -> ServiceStats:
        """This worker process's transform starts, restarts and initialisation time."""
        return ServiceStats() if self._transform is None else self._transform.stats

    def take_transform_starts(self) -> list[TransformStart]:
        mine = [] if self._transform is None else self._transform.take_starts()
        earlier, self._earlier_starts = self._earlier_starts, []
        return [*earlier, *mine]

    def _serve(self, r: EventRange, output: Path) -> int:
        """One range through this worker's long-lived transform.

        One range per ``Ready for events [N]``: the payload interface is one range
        per call, and the protocol lets the worker send fewer than asked for.
        Whatever goes wrong in the exchange (the transform died, hung, said
        something unexpected, or the deadline's SIGALRM came) kills the transform:
        its state is unknown, and the next range starts a fresh one. Only a
        range the transform reported done, with an output that reads back, is done.
        """
        output = _absolute(output)
        # a range before the input, or with an input and the input parameter: fatal, nothing run
        message = range_message(self.params, r)
        what = f"range {r.id}"
        t = self._service_transform(output, r.campaign_seed, command_input(self.params, r))
        try:
            reply = self._exchange(t, r, what, message)
        except RangeTimeout:
            # A transform still initialising holds no range: the range is redone
            # (not the range's fault), the initialisation goes on for the next one.
            # Otherwise a transform initialising longer than the range timeout
            # (minutes, against a timeout derived from seconds-long ranges) would
            # be killed again at every restart and never serve a range.
            if t.running and not t.ready_once:
                logger.info("%s: timed out while the transform initialises; kept", what)
            else:
                t.kill()
            raise
        except BaseException:
            t.kill()
            raise
        context = f"transform log {t.log}"
        if isinstance(reply, RangeFailed):
            error = FatalPayloadError if reply.fatal else PayloadError
            raise error(f"{what}: the transform failed it: {reply.message} ({context})")
        produced = Path(reply.path)
        if not produced.is_absolute():
            produced = t.workdir / produced
        if not produced.is_file():
            raise PayloadError(
                f"{what}: reported done in {produced}, which is not there ({context})"
            )
        shutil.move(produced, output)
        return self._count_events(output, what, context)

    def _exchange(
        self, t: Transform, r: EventRange, what: str, message: RangeMessage
    ) -> RangeDone | RangeFailed:
        """Hand the range over and wait for its end; each fault as the exception it is."""
        try:
            self._until_ready(t, what)
            t.send(ranges_line([message]))
            return self._reply(t, r)
        except TransformGone as exc:
            raise TransformLost(
                f"{what}: transform (pid {t.pid}) {exc} while holding the range; "
                f"log {t.log}, last lines:\n{_tail(t.log, t.log_offset)}"
            ) from None
        except TransformSilent:
            raise PayloadError(
                f"{what}: transform (pid {t.pid}) said nothing for "
                f"{self.params.timeout_seconds} s and was killed (log {t.log})"
            ) from None
        except ProtocolError as exc:
            raise PayloadError(
                f"{what}: transform (pid {t.pid}): {exc}; killed (log {t.log})"
            ) from None

    def _service_transform(self, output: Path, campaign_seed: int, input_path: str) -> Transform:
        """This worker's transform; one started for another campaign seed, or with another
        ``{input}`` on its command line, is ended first.

        ``input_path`` is "" unless the template uses ``{input}``: a transform reading its
        ranges' files from their ``PFN`` serves ranges of any file; one started with a
        file on its command line (an ATLAS transform needs ``--inputEVNTFile`` to
        initialise) is given only ranges of that file, and a range of another file
        starts another transform (another initialisation).
        """
        if self._broken is not None:
            raise FatalPayloadError(self._broken)
        key = (campaign_seed, input_path)
        if self._transform is not None and self._transform_key != key:
            starts = self._transform.take_starts()
            self._transform.close()
            self._transform, self._earlier_starts = None, [*self._earlier_starts, *starts]
        if self._transform is None:
            log_dir = self._service_log_dir(output)
            log = log_dir / f"transform-{socket.gethostname()}-{os.getpid()}.log"
            argv = functools.partial(
                self._service_argv, campaign_seed=campaign_seed, input_path=input_path
            )
            self._transform = Transform(argv, self._environment(), log, log_dir)
            self._transform_key = key
        return self._transform

    def _service_argv(
        self, channel: str, workdir: Path, campaign_seed: int, input_path: str
    ) -> list[str]:
        values = service_values(self.params, channel, workdir, campaign_seed, input_path)
        argv = render(self.params.simulate, values)
        spec = self.params.container
        if spec is not None:
            argv = [
                *container_argv(spec, workdir, {**self.params.env, CHANNEL_ENV: channel}),
                *argv,
            ]
        self._check_executable(argv[0])
        return argv

    def _until_ready(self, t: Transform, what: str) -> None:
        """Start the transform if none runs, and wait for its ``Ready for events``.

        Initialisation is limited by ``init_timeout_seconds`` from the start, not
        by the range's deadline (see ``_serve``); a transform dying in it, or
        overrunning it, is started again, up to ``InitDeaths``.
        """
        while True:
            if not t.running:
                if t.stats.starts:
                    logger.warning("%s: starting the transform again (log %s)", what, t.log)
                try:
                    t.start()
                except TransformCannotStart as exc:
                    raise FatalPayloadError(f"{what}: {exc}") from None
            limit = None
            if not t.ready_once:
                limit = max(0.0, self.params.init_timeout_seconds - t.initialising_for())
            try:
                message = t.receive(limit)
            except (TransformGone, TransformSilent) as exc:
                if t.ready_once:  # died idle, between ranges: it held none, start another
                    logger.warning("%s: the idle transform %s (log %s)", what, exc, t.log)
                    t.kill()
                    continue
                if isinstance(exc, TransformSilent):
                    exc = f"did not ask for events within {self.params.init_timeout_seconds} s"
                tail = _tail(t.log, t.log_offset)
                t.kill()
                if self._init_deaths.died():
                    self._broken = (
                        f"the transform died while initialising {self._init_deaths.in_a_row} "
                        f"times in a row (last: {exc}; log {t.log}); last lines:\n{tail}"
                    )
                    raise FatalPayloadError(f"{what}: {self._broken}") from None
                continue
            if not isinstance(message, Ready):
                raise ProtocolError(f"sent {message} when it should ask for events")
            t.initialised()
            self._init_deaths.ready()
            return

    def _reply(self, t: Transform, r: EventRange) -> RangeDone | RangeFailed:
        message = t.receive(self.params.timeout_seconds)
        if isinstance(message, Ready):
            raise ProtocolError(f"asked for events again while holding {r.id}")
        if message.range_id != r.id:
            raise ProtocolError(f"reported range {message.range_id!r}, which it was not given")
        return message

    @staticmethod
    def _service_log_dir(output: Path) -> Path:
        """``<campaign>/logs/service`` in the engine's layout, else beside the output."""
        campaign = _campaign_of(output)
        return output.parent if campaign is None else campaign / "logs" / SERVICE_DIR
