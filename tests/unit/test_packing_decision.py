"""``packing: auto`` (the default) decides from the records: padding-free (each batch's records end to end in one
row) when their lengths vary after truncation, padded when they are all the same or a step holds one record;
``true`` packs rows of ``max_length``; ``false`` pads; preference training never shares rows. The gateway's
estimate and the trainer decide with this one function, and size memory by the same fullest step."""

from __future__ import annotations

import pytest

from sage_ft import TrainingConfig
from sage_ft.packing import decide_packing, describe_setup, step_tokens


def test_the_default_is_auto() -> None:
    assert TrainingConfig().packing == "auto"
    assert TrainingConfig(packing=False).packing is False
    with pytest.raises(ValueError, match="packing"):
        TrainingConfig(packing="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("lengths", "max_length", "batch", "layout", "reason"),
    [
        ([40, 127, 65], 256, 8, "padding_free", "record lengths vary (40-127 tokens)"),
        ([64, 65], 1024, 2, "padding_free", "record lengths vary (64-65 tokens)"),
        ([300, 512, 400], 256, 8, "padded", "every record is 256 tokens after truncation"),  # all cut alike
        ([64, 64, 64], 1024, 8, "padded", "every record is 64 tokens"),
        ([40, 127, 65], 256, 1, "padded", "one record a step is never padded"),
        ([], 1024, 8, "padded", "every record is empty"),
    ],
)
def test_auto_is_padding_free_when_lengths_vary(
    lengths: list[int], max_length: int, batch: int, layout: str, reason: str
) -> None:
    decision = decide_packing("auto", lengths, max_length, batch)
    assert decision.layout == layout and decision.requested == "auto"
    assert decision.shares_rows == (layout != "padded")
    assert reason in decision.reason


def test_an_explicit_choice_and_preference_training_are_kept() -> None:
    assert decide_packing(False, [10, 500], 1024, 8).layout == "padded"
    assert decide_packing(True, [64, 64], 1024, 8).layout == "packed"
    dpo = decide_packing("auto", [10, 500], 1024, 8, method="dpo")
    assert dpo.layout == "padded" and "preference" in dpo.reason


def test_the_fullest_step_of_each_layout() -> None:
    lengths = [900, 50, 700, 30, 2000]
    assert step_tokens(decide_packing(True, lengths, 1024, 2), lengths, 1024, 2) == 2 * 1024  # two full rows
    assert step_tokens(decide_packing("auto", lengths, 1024, 2), lengths, 1024, 2) == 1024 + 900  # two longest
    assert step_tokens(decide_packing(False, lengths, 1024, 2), lengths, 1024, 2) == 2 * 1024  # two rows, padded


def test_the_event_line_says_what_was_used() -> None:
    setup = {
        "layout": "packed",
        "packing_reason": "packing=true was asked for",
        "records": 24,
        "rows_per_epoch": 7,
        "attention": "varlen",
    }
    assert describe_setup(setup) == (
        "packed rows (packing=true was asked for): 24 records in 7 rows per epoch, attention: varlen"
    )
    setup.update(layout="padding_free", packing_reason="record lengths vary (20-84 tokens)", rows_per_epoch=24)
    assert describe_setup(setup) == (
        "padding-free batches (record lengths vary (20-84 tokens)): 24 records per epoch, each batch in one row, "
        "attention: varlen"
    )
    padded = {"layout": "padded", "packing_reason": "packing=false was asked for", "records": 24}
    assert describe_setup(padded) == "padded batches (packing=false was asked for): 24 records per epoch"
