"""Write ``.env.example`` from the settings classes, so the documented settings are the real ones.

.venv/bin/python deploy/gen_env.py            # rewrite .env.example
.venv/bin/python deploy/gen_env.py --check    # exit 1 if .env.example differs (make test runs this check)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / ".env.example"

# Variables docker-compose itself needs (secrets have no default: compose refuses to start without them).
COMPOSE = [
    ("REDIS_PASSWORD", "", "Password of the bundled Redis (required)."),
    ("MINIO_ROOT_USER", "", "MinIO root user; also the S3 access key of the services (required)."),
    ("MINIO_ROOT_PASSWORD", "", "MinIO root password; also the S3 secret key of the services (required)."),
    ("GRAFANA_ADMIN_PASSWORD", "", "Grafana's admin password (required)."),
    ("SAGE_VERSION", "0.1.0", "Tag of the sage-ft images to build and run."),
    ("DOCKER_GID", "999", "Group id of /var/run/docker.sock on the host (serving starts vLLM containers)."),
    ("COMPOSE_PROFILES", "gpu", "Which worker compose starts: gpu (worker-gpu) or cpu (worker-cpu)."),
    ("GATEWAY_BIND", "127.0.0.1", "Host address the gateway is published on (0.0.0.0: every interface)."),
    ("GATEWAY_PORT", "8080", "Host port of the gateway."),
    ("GRAFANA_BIND", "127.0.0.1", "Host address Grafana is published on."),
    ("GRAFANA_PORT", "3000", "Host port of Grafana."),
]


def groups() -> list[tuple[str, type[BaseSettings]]]:
    from sage_ft.settings import GraderSettings, JobSettings, PathSettings, StorageSettings, TrainingEnvSettings
    from sage_ft_cli.settings import ChatSettings, CLISettings
    from sage_ft_gateway.settings import GatewaySettings, WebhookSettings
    from sage_ft_serving.settings import ServingSettings
    from sage_ft_worker.settings import WorkerSettings

    return [
        ("paths", PathSettings),
        ("jobs and queue (gateway, workers, serving)", JobSettings),
        ("object store", StorageSettings),
        ("training", TrainingEnvSettings),
        ("gateway", GatewaySettings),
        ("webhooks (gateway)", WebhookSettings),
        ("worker", WorkerSettings),
        ("serving", ServingSettings),
        ("graders (gateway and workers: the python sandbox, model graders)", GraderSettings),
        ("cli", CLISettings),
        ("chat (cli)", ChatSettings),
    ]


def _value(field: Any) -> str:
    if field.default_factory is not None:
        return "<computed>"
    value = field.default
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def render() -> str:
    lines = [
        "# sage-ft settings: every environment variable the services and the CLI read, with its default.",
        "# Generated from the settings classes by `python deploy/gen_env.py`; `make test` fails when it drifts.",
        "# Copy to .env for docker compose and set the required values.",
        "",
    ]
    lines.append("# --- docker compose ---")
    for name, default, doc in COMPOSE:
        lines += [f"# {doc}", f"{name}={default}"]
    for title, cls in groups():
        prefix = cls.model_config.get("env_prefix", "")
        lines += ["", f"# --- {title} ({prefix}*) ---"]
        for name, field in cls.model_fields.items():
            env = (field.alias or f"{prefix}{name}").upper()
            lines += [f"# {field.description or ''}".rstrip(), f"#{env}={_value(field)}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date with the settings classes: run `python deploy/gen_env.py`")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
