"""README's Benchmarks block is what the bench measured and labelled, and the labels say what was measured."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from backend_flask.config import ROOT
from backend_flask.lib.aws import make_client
from bench import patterns, report

README = ROOT / "README.md"
RESULT = ROOT / "bench" / "results" / "readme.json"


@pytest.fixture(scope="module")
def result() -> dict:
    """The full run README's block was generated from."""
    return json.loads(RESULT.read_text())


def test_readme_block_is_the_report_rendered_from_the_committed_full_run(result):
    # GIVEN the committed result of a full run WHEN its README block is rendered
    # THEN README holds exactly that block: every figure and label comes from the code
    assert not result["quick"]
    assert report.readme_block_in(README.read_text()) == report.readme_block(result)


def test_the_summary_in_the_result_is_what_the_code_computes_from_its_figures(result):
    assert result["summary"] == report.summarize(result)


def test_a_changed_figure_changes_the_block(result):
    # GIVEN the same result with one server's figure changed
    changed = copy.deepcopy(result)
    changed["http"][0]["rps"] += 1.0
    changed["summary"] = report.summarize(changed)
    # THEN README no longer matches it: a hand-edited number cannot pass
    assert report.readme_block(changed) != report.readme_block_in(README.read_text())


def test_a_quick_run_cannot_become_readme_figures(result):
    with pytest.raises(ValueError):
        report.readme_block({**result, "quick": True})


def test_pattern_labels_and_minima_come_from_the_data(config, messages, bus):
    # GIVEN a user in 23 conversations, one of them with 21 messages
    me, peer = patterns.person("me"), patterns.person("peer")
    group = messages.create_message_group(sender=me, receiver=peer, message="hi")["message_group_uuid"]
    for n in range(22):
        messages.create_message_group(sender=me, receiver=patterns.person(f"other{n}"), message="hi")
    for n in range(20):
        messages.create_message(message_group_uuid=group, sender=me, message=f"m{n}")
    reader = patterns.Reader(make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url),
                             config.ddb_message_table)
    # WHEN the patterns are measured
    rows = {r["pattern"]: r for r in patterns.measure_patterns(messages, reader, me, group, peer, repeat=2, bus=bus)}
    # THEN the labels count what the user really has (the peer's message before A makes it 22)
    assert rows["B"]["what"] == "list 20 of 23 conversations, unread counts on the rows"
    assert rows["A"]["what"].startswith("open a conversation: 20 of 22 messages")
    # AND each minimum is priced from the items read back: 20 rows of this size in one eventually consistent Query
    assert len(rows["B"]["item_bytes"]) == 20
    assert rows["B"]["minimum"] == 0.5 * -(-sum(rows["B"]["item_bytes"]) // 4096)
    # AND "at min" says whether the bill exceeds the minimum (it can say NO), and the steady paths are at it
    for r in rows.values():
        assert r["at_minimum"] is None or r["at_minimum"] == (r["capacity"] <= r["minimum"])
    assert rows["A'"]["at_minimum"] and rows["D'"]["at_minimum"] and rows["E"]["at_minimum"]
    # AND the alternative to E is priced cheaper than E
    assert rows["E'"]["minimum"] < rows["E"]["minimum"]


def test_the_b_label_says_so_when_the_user_has_fewer_conversations_than_a_page(config, messages):
    me, peer = patterns.person("few"), patterns.person("only")
    group = messages.create_message_group(sender=me, receiver=peer, message=f"hi {uuid.uuid4()}")["message_group_uuid"]
    reader = patterns.Reader(make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url),
                             config.ddb_message_table)
    rows = {r["pattern"]: r for r in patterns.measure_patterns(messages, reader, me, group, peer, repeat=1)}
    assert rows["B"]["what"] == "list 1 of 1 conversations, unread counts on the rows"
