"""The job report states the seed rule the code uses: recomputed from the statement alone."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from parsl_es.ranges import event_seed, range_seed
from parsl_es.report import seeds_section


def seed_from_statement(seeds: dict, which: str, campaign_seed: int, number: int) -> int:
    """A seed computed with hashlib from what the job report says, not from parsl_es code."""
    template = seeds[f"{which}_seed_text"]
    fields = re.findall(r"\{(\w+)\}", template)
    assert fields[0] == "campaign_seed" and len(fields) == 2, template
    text = template.format(**{fields[0]: campaign_seed, fields[1]: number})
    digest = hashlib.new(seeds["hash"], text.encode(), digest_size=seeds["digest_size"]).digest()
    return int.from_bytes(digest, seeds["byteorder"]) % seeds["modulus"] + seeds["offset"]


def check_seeds_section(seeds: dict) -> None:
    """Every stated rule reproduces ``event_seed`` and ``range_seed``."""
    campaign_seed = seeds["campaign"]
    for number in (0, 1, 2, 99, 12345, 10**9):
        assert seed_from_statement(seeds, "event", campaign_seed, number) == event_seed(
            campaign_seed, number
        )
        assert seed_from_statement(seeds, "range", campaign_seed, number) == range_seed(
            campaign_seed, number
        )
    # the prose says the same hash as the fields
    assert seeds["hash"] in seeds["rule"] and "sha256" not in seeds["rule"]
    assert seeds["event_seed_text"] in seeds["rule"] and seeds["range_seed_text"] in seeds["rule"]


@pytest.mark.parametrize("campaign_seed", [1, 3, 42, 899_999_999])
def test_job_report_seed_rule_recomputes_the_seeds(campaign_seed):
    # the section as it is written into jobReport.json (through JSON, as a reader sees it)
    seeds = json.loads(json.dumps(seeds_section(campaign_seed)))
    assert seeds["campaign"] == campaign_seed
    check_seeds_section(seeds)
