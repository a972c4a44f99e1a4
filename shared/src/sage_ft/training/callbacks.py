"""Progress reporting: a small callback interface the worker turns into job events, and its HF adapter.

``TrainingCallback`` is what users and services implement. ``_HFBridge`` translates the Hugging Face trainer's
hooks into ``ProgressEvent`` objects carrying step, total, loss, learning rate, tokens/s and ETA, and asks every
callback ``should_stop()`` once per step, which is how cancel and pause reach a running job.

Under several processes (torchrun) rank 0 decides whether to stop and every rank follows its decision, so no rank
is left waiting in a collective; a checkpoint event is sent only once every rank has written its part of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


@dataclass
class ProgressEvent:
    kind: str  # "start" | "log" | "checkpoint" | "end"
    step: int
    total_steps: int
    epoch: float = 0.0
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    tokens_seen: int = 0
    eta_seconds: float | None = None
    elapsed_seconds: float = 0.0
    checkpoint: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)  # on "start": how batches are laid out (LoRATrainer.setup)
    samples: list[dict[str, Any]] = field(default_factory=list)  # on some "log"s of RFT: answers and their rewards

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainingCallback:
    """Override what you need. Every hook is called in the training process, between steps."""

    def on_event(self, event: ProgressEvent) -> None:
        """Called at start, at every logging step, at every checkpoint and at the end."""

    def should_stop(self) -> bool:
        """Return True to stop after the current step; a checkpoint is saved first."""
        return False


class RecordingCallback(TrainingCallback):
    """Keeps every event; handy for tests, notebooks and the demo."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def on_event(self, event: ProgressEvent) -> None:
        self.events.append(event)

    @property
    def losses(self) -> list[float]:
        return [e.loss for e in self.events if e.kind == "log" and e.loss is not None]


class _HFBridge(TrainerCallback):
    def __init__(self, callbacks: list[TrainingCallback]) -> None:
        self.callbacks = callbacks
        self._t0 = 0.0
        self._start_step = 0
        self._start_tokens = 0
        self.stopped_early = False
        self.setup: dict[str, Any] = {}
        # RFT: where the latest sampled answers come from, and every how many steps they are reported
        self.samples: Callable[[], list[dict[str, Any]]] | None = None
        self.samples_every = 0

    def _emit(self, event: ProgressEvent) -> None:
        for cb in self.callbacks:
            cb.on_event(event)

    def _event(self, kind: str, state: TrainerState, **extra: Any) -> ProgressEvent:
        elapsed = time.monotonic() - self._t0
        done = state.global_step - self._start_step
        tokens = int(state.num_input_tokens_seen or 0)
        rate = (tokens - self._start_tokens) / elapsed if elapsed > 0 and tokens else None
        eta = None
        if done > 0 and state.max_steps:
            eta = elapsed / done * max(0, state.max_steps - state.global_step)
        return ProgressEvent(
            kind=kind,
            step=state.global_step,
            total_steps=state.max_steps,
            epoch=float(state.epoch or 0.0),
            tokens_per_second=rate,
            tokens_seen=tokens,
            eta_seconds=eta,
            elapsed_seconds=elapsed,
            **extra,
        )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._t0 = time.monotonic()
        self._start_step = state.global_step
        self._start_tokens = int(state.num_input_tokens_seen or 0)
        self._emit(self._event("start", state, setup=dict(self.setup)))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        if "loss" not in logs and not any(k.startswith("eval_") for k in logs):
            return
        metrics = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
        gpu = _gpu_memory_bytes()
        if gpu:
            metrics["gpu_memory_bytes"] = gpu
        due = self.samples_every and (state.global_step == 1 or state.global_step % self.samples_every == 0)
        samples = self.samples() if self.samples is not None and "loss" in logs and due else []
        self._emit(
            self._event(
                "log",
                state,
                loss=logs.get("loss"),
                learning_rate=logs.get("learning_rate"),
                metrics=metrics,
                samples=samples,
            )
        )

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        dist = _distributed()
        if dist is not None:
            dist.barrier()  # each rank saves its own RNG state: the checkpoint is whole only once all have
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self._emit(self._event("checkpoint", state, checkpoint=str(path)))

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        stop = any(cb.should_stop() for cb in self.callbacks)
        dist = _distributed()
        if dist is not None:
            import torch

            flag = torch.tensor([int(stop)])
            dist.broadcast(flag, src=0)  # rank 0 decides for all: one rank stopping alone would hang the rest
            stop = bool(flag.item())
        if stop:
            self.stopped_early = True
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._emit(self._event("end", state))


def _distributed() -> Any:
    """``torch.distributed`` when this process is one of several ranks, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _gpu_memory_bytes() -> float:
    """Peak GPU memory allocated by this process so far (0 without CUDA)."""
    import torch

    return float(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else 0.0
