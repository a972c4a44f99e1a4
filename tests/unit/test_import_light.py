import subprocess
import sys


def run_python(code: str) -> str:
    """``code`` in a fresh interpreter (what it imports is all it loads); its stdout, after it exited 0."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_core_api_imports_without_torch() -> None:
    """The CLI and gateway import sage_ft without the train extra: block torch and import the API."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from sage_ft import TrainingConfig, PresetConfigs, LoRAConfig\n"
        "from sage_ft.data import validate_file\n"
        "print(PresetConfigs.auto().preset)\n"
        "try:\n    from sage_ft import LoRATrainer\nexcept ImportError as e:\n    print('IMPORTERROR', e)\n"
    )
    lines = run_python(code).splitlines()
    assert lines[0] == "cpu"
    assert "IMPORTERROR" in lines[1] and "train" in lines[1]


def test_the_cli_never_imports_torch() -> None:
    """Every CLI command module loads with torch blocked (it talks HTTP to the gateway)."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from sage_ft_cli.main import cli\n"
        "print(sorted(cli.commands))\n"
    )
    stdout = run_python(code)
    assert "quickstart" in stdout and "chat" in stdout and "up" in stdout


def test_the_library_needs_no_web_stack_outside_its_http_extra() -> None:
    """``sage_ft`` (storage, jobs, data, settings) loads with FastAPI blocked; only ``sage_ft.api_errors``, shipped
    for the services under the ``http`` extra, needs it."""
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['starlette'] = None\n"
        "import sage_ft, sage_ft.storage, sage_ft.jobs, sage_ft.jobs.job_states, sage_ft.data, sage_ft.settings\n"
        "import sage_ft.storage.merges, sage_ft.jobs.broker\n"
        "try:\n    import sage_ft.api_errors\nexcept ImportError:\n    print('api_errors needs fastapi')\n"
    )
    assert run_python(code).strip() == "api_errors needs fastapi"


def test_the_worker_starts_without_the_training_stack() -> None:
    """The worker process only watches its trainer child: its app and every task load with torch, transformers and
    PEFT blocked. (They took 15 s to import; on a loaded CI machine the compose worker missed its health check.)"""
    code = (
        "import sys\n"
        "for m in ('torch', 'transformers', 'peft', 'trl', 'bitsandbytes', 'datasets'): sys.modules[m] = None\n"
        "from sage_ft_worker.celery_app import app\n"
        "import sage_ft_worker.tasks.train, sage_ft_worker.tasks.merge, sage_ft_worker.tasks.evaluate\n"
        "print(sorted(t for t in app.tasks if t.startswith('sage_ft.')))\n"
    )
    assert run_python(code).strip() == "['sage_ft.evaluate', 'sage_ft.merge', 'sage_ft.train']"
