"""How a run lays its records out in batches, decided from the records themselves (issue 27).

Three layouts, each exact (a record attends only to itself, ``sage_ft.training.attention``):

- ``padded``: one record a row, padded to the batch's longest (records of similar length are batched together);
- ``padding_free``: a batch's records laid end to end in one row, so no token is padding; a step trains exactly the
  records it would padded, so steps, learning-rate schedule and results are those of the padded run;
- ``packed``: TRL's best-fit decreasing packing into rows of ``max_length``; a step holds ``batch_size`` full rows,
  so it trains more records per optimizer step and the run takes fewer steps (the most tokens per second).

``packing`` is ``True`` (packed), ``False`` (padded) or ``"auto"``, the default: padding-free whenever record
lengths vary in a batch of several, padded otherwise (nothing to save). ``auto`` does not bin-pack, because that
changes what ``batch_size`` means (rows, not records) and cuts the optimizer steps by up to ``max_length`` over the
mean record length: on a small dataset the model then learns visibly less in the same epochs.

Torch-free: the gateway's estimate and the trainer decide with the same function, on the same lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

PackingRequest = bool | Literal["auto"]
Layout = Literal["padded", "padding_free", "packed"]


@dataclass(frozen=True)
class PackingDecision:
    layout: Layout
    requested: PackingRequest
    reason: str

    @property
    def shares_rows(self) -> bool:
        """Several records in one row (packed or padding-free): the packed-attention backends are needed."""
        return self.layout != "padded"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_packing(
    requested: PackingRequest, lengths: Sequence[int], max_length: int, batch_size: int, method: str = "sft"
) -> PackingDecision:
    """``lengths``: the training records' token counts, before truncation at ``max_length``; ``batch_size``: records
    (or packed rows) per device and step."""
    if method == "dpo":
        return PackingDecision("padded", requested, "preference training pads each chosen/rejected pair")
    if method != "sft":
        return PackingDecision("padded", requested, "reinforcement fine-tuning pads the sampled answers")
    if requested is True:
        return PackingDecision("packed", requested, "packing=true was asked for")
    if requested is False:
        return PackingDecision("padded", requested, "packing=false was asked for")
    kept = [min(n, max_length) for n in lengths]
    if len(set(kept)) <= 1:
        size = f"{kept[0]} tokens" if kept else "empty"
        return PackingDecision("padded", requested, f"every record is {size} after truncation: no padding to save")
    if batch_size <= 1:
        return PackingDecision("padded", requested, "one record a step is never padded")
    return PackingDecision("padding_free", requested, f"record lengths vary ({min(kept)}-{max(kept)} tokens)")


def step_tokens(decision: PackingDecision, lengths: Sequence[int], max_length: int, batch_size: int) -> int:
    """The most tokens one step can hold (what peak memory is sized by): ``batch_size`` full rows packed, the
    ``batch_size`` longest records end to end padding-free, ``batch_size`` rows of the longest record padded."""
    kept = sorted((min(n, max_length) for n in lengths), reverse=True) or [max_length]
    if decision.layout == "packed":
        return batch_size * max_length
    if decision.layout == "padding_free":
        return sum(kept[:batch_size])
    return batch_size * kept[0]


def describe_setup(setup: dict[str, Any]) -> str:
    """One line for a job's events: ``LoRATrainer.setup`` as a person reads it."""
    records, rows = setup.get("records"), setup.get("rows_per_epoch")
    layout, reason = setup.get("layout"), setup.get("packing_reason")
    if layout == "packed":
        line = f"packed rows ({reason}): {records} records in {rows} rows per epoch"
    elif layout == "padding_free":
        line = f"padding-free batches ({reason}): {records} records per epoch, each batch in one row"
    else:
        line = f"padded batches ({reason}): {records} records per epoch"
    if setup.get("attention"):
        line += f", attention: {setup['attention']}"
    return line
