from pathlib import Path

from sage_ft.training.checkpoints import latest_checkpoint


def test_newest_checkpoint_by_numeric_step(tmp_path: Path) -> None:
    for step in (99, 500, 1000, 200):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-5000").mkdir()  # incomplete: no trainer_state.json
    (tmp_path / "checkpoint-final").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1000"
    assert latest_checkpoint(tmp_path / "nope") is None
