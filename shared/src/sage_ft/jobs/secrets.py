"""Secrets users give in job requests (a W&B ``api_key``): sealed with the operator's key before they reach Redis,
handed to the trainer through its environment only (never in task arguments, the job record or events), shown as
``****``, and deleted with the job's record of them when the job ends.

The key is ``SAGE_SECRETS_KEY`` (a Fernet key: ``python -c "from cryptography.fernet import Fernet;
print(Fernet.generate_key().decode())"``). Without one, a request carrying a secret is refused, never stored plain.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from sage_ft.errors import ConfigError

MASK = "****"
# where each secret of a request goes in the trainer's environment
WANDB_KEY_ENV = "WANDB_API_KEY"


class SecretsUnavailableError(ConfigError):
    """No key to seal or open secrets with."""


class SecretBox:
    def __init__(self, key: SecretStr | None) -> None:
        self._fernet: Any = None
        if key is not None and key.get_secret_value():
            from cryptography.fernet import Fernet

            try:
                self._fernet = Fernet(key.get_secret_value().encode())
            except (ValueError, TypeError) as err:
                raise SecretsUnavailableError(f"SAGE_SECRETS_KEY is not a valid Fernet key: {err}") from None

    @property
    def ready(self) -> bool:
        return self._fernet is not None

    def seal(self, values: dict[str, str], param: str) -> dict[str, str]:
        if not values:
            return {}
        if self._fernet is None:
            why = "this server holds no key to store secrets encrypted (SAGE_SECRETS_KEY); ask its operator"
            raise SecretsUnavailableError(f"{param}: {why}, or leave the secret out", param=param)
        return {name: self._fernet.encrypt(value.encode()).decode() for name, value in values.items()}

    def open(self, sealed: dict[str, str]) -> dict[str, str]:
        if not sealed:
            return {}
        if self._fernet is None:
            raise SecretsUnavailableError("the job carries encrypted secrets and this worker has no SAGE_SECRETS_KEY")
        from cryptography.fernet import InvalidToken

        try:
            return {name: self._fernet.decrypt(token.encode()).decode() for name, token in sealed.items()}
        except InvalidToken:
            raise SecretsUnavailableError("the job's secrets were sealed with another SAGE_SECRETS_KEY") from None


def request_secrets(integrations: list[Any] | None) -> dict[str, str]:
    """The secrets a request carries, by the environment variable the trainer reads them from."""
    out: dict[str, str] = {}
    for integration in integrations or []:
        key = getattr(integration.wandb, "api_key", None) if integration.type == "wandb" else None
        if key is not None and key.get_secret_value():
            out[WANDB_KEY_ENV] = key.get_secret_value()
    return out


def masked_integrations(integrations: list[Any] | None) -> list[dict[str, Any]]:
    """Integrations as stored and echoed: any secret replaced by ``****``."""
    out = []
    for integration in integrations or []:
        data = integration.model_dump(mode="json", exclude_none=True)
        if integration.type == "wandb" and integration.wandb.api_key is not None:
            data["wandb"]["api_key"] = MASK
        out.append(data)
    return out
