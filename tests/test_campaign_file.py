"""Campaign files: the public keys, and clear errors that name file, field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from parsl_es.campaign import campaign_from_dict, load_campaign, shipped_campaigns
from parsl_es.errors import UserError

GOOD = """\
name: t1
events: 103
first_event: 1000
events_per_range: 5
events_per_merge: 20
seed: 42
attempts: 4
payload:
  name: emulate
  seconds_per_event: 0.01
steps:
  simulate: local
"""


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "campaign.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str | bytes) -> UserError:
    with pytest.raises(UserError) as info:
        load_campaign(write(tmp_path, text))
    return info.value


def test_good_campaign(tmp_path):
    spec = load_campaign(write(tmp_path, GOOD))
    assert spec.events == 103 and spec.first_event == 1000 and spec.attempts == 4
    assert spec.payload.name == "emulate"
    assert spec.payload.params == {"seconds_per_event": 0.01}
    assert spec.steps.simulate == ["local"]
    assert spec.plan.n_ranges == 21 and spec.plan.n_merges == 6


def test_shipped_campaigns_are_valid():
    shipped = shipped_campaigns()
    assert "demo" in shipped
    for path in shipped.values():
        load_campaign(path)
    assert load_campaign("demo").payload.name == "physics"


def test_typo_in_key_suggests_the_right_one_with_line(tmp_path):
    err = error_of(tmp_path, GOOD.replace("events: 103", "evnets: 103"))
    text = str(err)
    assert "campaign.yaml:2" in text
    assert "unknown key 'evnets'" in text and "did you mean 'events'" in text


def test_merge_not_multiple_of_range(tmp_path):
    err = error_of(tmp_path, GOOD.replace("events_per_merge: 20", "events_per_merge: 12"))
    assert "events_per_merge (12) must be a multiple of events_per_range (5)" in str(err)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("events: 103", "events: -5", "events"),
        ("events: 103", "events: 0", "events"),
        ("events_per_range: 5", "events_per_range: 0", "events_per_range"),
        ("events: 103", "events: lots", "events"),
        ("attempts: 4", "attempts: 0", "attempts"),
        ("name: t1", "name: 'a b/c'", "name"),
    ],
)
def test_bad_values_name_field_and_line(tmp_path, old, new, field):
    err = error_of(tmp_path, GOOD.replace(old, new))
    assert f"{field}:" in str(err)
    assert err.line == GOOD.splitlines().index(old) + 1


def test_missing_required_key(tmp_path):
    err = error_of(tmp_path, GOOD.replace("seed: 42\n", ""))
    assert "seed: required key is missing" in str(err)


def test_malformed_yaml_gives_line(tmp_path):
    err = error_of(tmp_path, GOOD.replace("seed: 42", "seed: [42"))
    assert "malformed YAML" in str(err) and err.line is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "empty"), (b"\x00\x01\x02binary", "binary"), ("- a\n- b\n", "mapping")],
)
def test_empty_binary_or_non_mapping(tmp_path, content, message):
    assert message in str(error_of(tmp_path, content))


def test_unknown_payload_lists_allowed(tmp_path):
    err = error_of(tmp_path, GOOD.replace("name: emulate", "name: emulat"))
    text = str(err)
    assert "unknown payload 'emulat'" in text and "did you mean 'emulate'" in text
    assert "physics" in text


def test_bad_payload_parameter_names_payload_field(tmp_path):
    err = error_of(tmp_path, GOOD.replace("seconds_per_event: 0.01", "seconds_per_evnt: 0.01"))
    assert "payload:" in str(err) and "seconds_per_evnt" in str(err)
    err = error_of(tmp_path, GOOD.replace("seconds_per_event: 0.01", "seconds_per_event: -1"))
    assert "payload.seconds_per_event" in str(err)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_campaign(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="directory"):
        load_campaign(tmp_path)
    with pytest.raises(UserError, match="no shipped campaign"):
        load_campaign("demoo")


def test_campaign_from_dict_for_notebooks():
    spec = campaign_from_dict(
        {
            "name": "nb",
            "events": 10,
            "events_per_range": 1,
            "events_per_merge": 5,
            "seed": 1,
            "payload": {"name": "emulate"},
        }
    )
    assert spec.plan.n_merges == 2
    with pytest.raises(UserError, match="events_per_merge"):
        campaign_from_dict(
            {
                "name": "nb",
                "events": 10,
                "events_per_range": 1,
                "seed": 1,
                "payload": {"name": "emulate"},
            }
        )
