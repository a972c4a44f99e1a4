import subprocess
import sys


def test_core_api_imports_without_torch() -> None:
    """The CLI and gateway import sage_ft without the train extra: block torch and import the API."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from sage_ft import TrainingConfig, PresetConfigs, LoRAConfig\n"
        "from sage_ft.data import validate_file\n"
        "print(PresetConfigs.auto().preset)\n"
        "try:\n    from sage_ft import LoRATrainer\nexcept ImportError as e:\n    print('IMPORTERROR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "cpu"
    assert "IMPORTERROR" in lines[1] and "train" in lines[1]


def test_the_cli_never_imports_torch() -> None:
    """Every CLI command module loads with torch blocked (it talks HTTP to the gateway)."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from sage_ft_cli.main import cli\n"
        "print(sorted(cli.commands))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "quickstart" in out.stdout and "chat" in out.stdout and "up" in out.stdout
