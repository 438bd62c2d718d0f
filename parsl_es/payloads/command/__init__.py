"""The ``command`` payload: run an experiment's own transforms, per range or as a service.

A campaign names a command-line template for simulation (an ATLAS ``Sim_tf.py``
line, say) and optionally one for merging; this payload fills in the range's
numbers and paths and runs it, optionally inside a container. The engine keeps
doing what it does for any payload: temporary names, renames, checksums,
retries, the ledger, validation (which reads event numbers with uproot).

Templates are never given to a shell. Each one is split into arguments with
``shlex.split`` *before* anything is substituted, then every placeholder is
filled with ``str.format`` inside its own argument, and the argument list is
run with ``shell=False``. A value holding spaces, quotes, ``;``, ``$(...)`` or
braces therefore arrives as (part of) exactly one argument, literally.

``mode: per_range`` (the default) starts the simulate command once per range.
``mode: service`` starts it once per worker process and hands it one range
after another over a Unix domain socket (the event-service exchange of
``parsl_es.event_service``; the process and socket are ``service``): a transform that takes
minutes to initialise pays that once per worker, not once per range. Its
template may use only ``{channel}`` (the socket's path, also in
``$PARSL_ES_CHANNEL``), ``{input}``, ``{workdir}`` and ``{campaign_seed}``: the
ranges' numbers come over the socket.

Simulate placeholders: ``{input}``, ``{output}``, ``{skip}``, ``{first_event}``,
``{last_event}``, ``{n_events}``, ``{seed}``, ``{campaign_seed}``, ``{range_id}``,
``{workdir}``, and ``{channel}`` (``mode: service`` only). Merge placeholders:
``{inputs_file}``, ``{output}``, ``{n_inputs}``, ``{workdir}``. A literal brace is
written ``{{`` or ``}}``.

Input: a range with an ``input`` of its own (a chain step reading an earlier step's
merged files, or a dataset) gives ``{input}`` (that file), ``{skip}`` (its events
before the range's first) and ``{n_events}``; in ``mode: service`` the range's
message carries them as ``PFN`` and the 1-based, inclusive ``startEvent`` =
skip + 1 and ``lastEvent`` = skip + n_events. The payload's ``input`` parameter
(with ``input_first_event``) is for a campaign without input of its own and must
not be set as well. A template using ``{input}`` for a range with neither fails
that range (fatal): only the range can tell.

Modules, dependencies one way: ``templates``, ``parsl_es.event_service`` <- ``params`` <-
``serving`` (service mode's half of the payload) <- ``payload``; ``serving`` uses
``service`` (the transform's process and socket, which uses ``event_service`` and
``process``). This package re-exports their public names (the entry
point is ``parsl_es.payloads.command:CommandPayload``).
"""

from __future__ import annotations

from parsl_es.containers import ContainerSpec, container_argv
from parsl_es.payloads.command.params import (
    CommandParams,
    command_input,
    input_skip,
    range_input,
    simulate_values,
)
from parsl_es.payloads.command.payload import MERGED_DIR, RUNTIMES, CommandPayload
from parsl_es.payloads.command.process import TAIL_LINES
from parsl_es.payloads.command.service import ServiceStats
from parsl_es.payloads.command.templates import (
    MERGE_FIELDS,
    SERVICE_FIELDS,
    SIMULATE_FIELDS,
    check_template,
    render,
    split_template,
    template_fields,
    token_fields,
)

__all__ = [
    "MERGED_DIR",
    "MERGE_FIELDS",
    "RUNTIMES",
    "SERVICE_FIELDS",
    "SIMULATE_FIELDS",
    "TAIL_LINES",
    "CommandParams",
    "CommandPayload",
    "ContainerSpec",
    "ServiceStats",
    "check_template",
    "command_input",
    "container_argv",
    "input_skip",
    "range_input",
    "render",
    "simulate_values",
    "split_template",
    "template_fields",
    "token_fields",
]
