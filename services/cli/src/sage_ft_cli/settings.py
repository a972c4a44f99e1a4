"""CLI settings: the one place the CLI reads environment variables.

``SAGE_FT_*`` for the gateway, ``SAGE_CHAT_*`` for chat defaults, and the variables other tools already define
(``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OLLAMA_HOST``, ``REDIS_URL``). ``sources()`` says where each value came
from, for ``sage-ft config show``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sage_ft.settings import PathSettings
from sage_ft.settings import child_environment as shared_child_environment


class CLISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGE_FT_", extra="ignore")

    gateway_url: str = Field(default="http://127.0.0.1:8080", description="The gateway the CLI talks to.")
    api_key: SecretStr | None = Field(default=None, description="API key sent as a bearer token (secret).")
    auto_start: bool = Field(default=True, description="Start the local stack when no gateway answers.")


class ChatSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGE_CHAT_", extra="ignore")

    backend: str | None = Field(default=None, description="finetune | openai | vllm | ollama | mock.")
    finetune_model: str | None = Field(default=None, description="Fine-tuned model the finetune backend uses.")
    finetune_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the local gateway the finetune backend talks to."
    )


class ProviderSettings(BaseSettings):
    """Variables defined by other tools, honoured under their usual names."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    openai_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("OPENAI_API_KEY"))
    openai_base_url: str = Field(default="https://api.openai.com/v1", validation_alias=AliasChoices("OPENAI_BASE_URL"))
    ollama_host: str = Field(default="http://127.0.0.1:11434", validation_alias=AliasChoices("OLLAMA_HOST"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "SAGE_REDIS_URL"))


class Settings:
    def __init__(self) -> None:
        self.cli = CLISettings()
        self.chat = ChatSettings()
        self.providers = ProviderSettings()
        self.paths = PathSettings()

    @property
    def run_dir(self) -> Path:
        """Pid files and logs of the local stack (``sage-ft up``)."""
        return self.paths.resolved_home() / "run"

    def sources(self) -> list[dict[str, Any]]:
        """Each setting with its effective value (secrets masked) and where it came from."""
        rows = []
        groups: list[tuple[BaseSettings, str]] = [
            (self.cli, "SAGE_FT_"),
            (self.chat, "SAGE_CHAT_"),
            (self.paths, "SAGE_"),
        ]
        for group, prefix in groups:
            for name, field in type(group).model_fields.items():
                env = f"{prefix}{name.upper()}"
                rows.append(_row(env, getattr(group, name), env in os.environ, field.description))
        for name, field in ProviderSettings.model_fields.items():
            aliases = field.validation_alias.choices if isinstance(field.validation_alias, AliasChoices) else []
            env = next((str(a) for a in aliases if str(a) in os.environ), str(aliases[0]) if aliases else name)
            rows.append(_row(env, getattr(self.providers, name), env in os.environ, field.description))
        return rows


def child_environment(**overrides: str) -> dict[str, str]:
    """The environment the local stack's processes start with: this one without secrets, plus ``overrides``."""
    return shared_child_environment(overrides)


def _row(env: str, value: Any, from_env: bool, description: str | None) -> dict[str, Any]:
    if isinstance(value, SecretStr):
        value = "********" if value.get_secret_value() else ""
    return {
        "name": env,
        "value": "" if value is None else str(value),
        "source": "env" if from_env else "default",
        "description": description or "",
    }
