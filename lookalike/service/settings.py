"""The service's settings: arguments, else ``LOOKALIKE_<NAME>`` variables, else a mounted secrets folder; and the
API key check every write and admin call goes through."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from starlette.exceptions import HTTPException

from lookalike.params import PROJECT_ROOT

ENV_PREFIX = "LOOKALIKE_"
API_KEY_ENV = "LOOKALIKE_API_KEY"
SECRETS_DIR_ENV = "LOOKALIKE_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets"  # where Docker and Kubernetes mount secrets: a file named lookalike_api_key
MIN_API_KEY_CHARS = 16


class SettingsError(ValueError):
    """Settings that do not validate; the message names the setting and the rule, never the value."""


class Settings(BaseSettings):
    """Everything the service needs to know, validated: from arguments, else ``LOOKALIKE_<NAME>`` variables, else
    files named ``lookalike_<name>`` in the secrets folder ($LOOKALIKE_SECRETS_DIR, default /run/secrets)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    artifacts: str | None = None  # None: <root>/artifacts
    live_db: str | None = None  # None: <root>/live/live.db
    root: Path = PROJECT_ROOT
    api_key: SecretStr | None = None  # None: writes are refused (403)
    api_key_file: Path | None = None  # a file whose first line is the key (wins over api_key)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)  # comma-separated in the environment
    max_upload_mb: float = Field(10.0, gt=0, le=1024)
    max_k: int = Field(100, ge=1, le=10_000)
    default_k: int = Field(5, ge=1)
    near_duplicate_cosine: float | None = Field(None, gt=0, le=1)  # None: the build's calibrated threshold
    poll_seconds: float = Field(2.0, gt=0)  # how often artifacts/current.json is looked at
    follow_seconds: float = Field(0.25, gt=0)  # how often the journal is followed (other workers' writes)
    # a new build is switched to this long after the first server noticed it, by every server at that instant
    switch_delay_seconds: float = Field(10.0, ge=0, le=3600)
    liveness_grace_seconds: float = Field(900.0, gt=0)  # no catalogue for this long: /healthz fails
    wait_for_load: bool = False  # start answering only once the first catalogue is loaded (several workers)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value or []

    @model_validator(mode="after")
    def _key(self) -> Settings:
        if self.api_key_file is not None:
            self.api_key = SecretStr(read_api_key(self.api_key_file))
        if self.api_key is not None and len(self.api_key.get_secret_value()) < MIN_API_KEY_CHARS:
            raise ValueError(f"the API key must be at least {MIN_API_KEY_CHARS} characters")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k {self.default_k} is above max_k {self.max_k}")
        return self

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from ``overrides`` (None values ignored), the environment and the secrets folder."""
        secrets = Path(os.environ.get(SECRETS_DIR_ENV) or DEFAULT_SECRETS_DIR)
        values = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(_secrets_dir=secrets if secrets.is_dir() else None, **values)
        except ValidationError as error:  # pydantic's message echoes the values: one of them may be the key
            raise SettingsError("invalid settings: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())) from None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def key(self) -> str | None:
        return None if self.api_key is None else self.api_key.get_secret_value()

    def environ(self) -> dict[str, str]:
        """These settings as ``LOOKALIKE_*`` variables: how worker processes (``--workers N``) receive them."""
        values = self.model_dump(exclude={"api_key", "api_key_file", "cors_origins"}, exclude_none=True)
        env = {f"{ENV_PREFIX}{k.upper()}": str(v) for k, v in values.items()}
        env[f"{ENV_PREFIX}CORS_ORIGINS"] = ",".join(self.cors_origins)
        if self.api_key is not None:
            env[API_KEY_ENV] = self.key() or ""
        return env


def read_api_key(path: str | Path) -> str:
    """The first line of a key file (a secret mounted as a file)."""
    try:
        lines = Path(path).read_text().strip().splitlines()
    except OSError as error:
        raise ValueError(f"cannot read the API key file {path}: {error.strerror or error}") from None
    if not lines or not lines[0].strip():
        raise ValueError(f"the API key file {path} is empty")
    return lines[0].strip()


class ServiceError(HTTPException):
    """An error answered as JSON {"error": error, "detail": detail} with ``status``."""

    def __init__(self, status: int, error: str, detail: str, headers: dict | None = None):
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.error = error


def check_api_key(settings: Settings, headers: dict[str, str]) -> ServiceError | None:
    """None if the request carries the API key; otherwise the refusal (401, or 403 with writes disabled)."""
    key = settings.key()
    if key is None:
        return ServiceError(403, "forbidden", f"writes are disabled: the server has no API key ({API_KEY_ENV})")
    offered = headers.get("x-api-key")
    authorization = headers.get("authorization", "")
    if offered is None and authorization.lower().startswith("bearer "):
        offered = authorization[7:].strip()
    if offered is None or not hmac.compare_digest(offered.encode("utf-8", "replace"),
                                                  key.encode("utf-8")):
        return ServiceError(401, "unauthorized", "a valid API key is required (X-API-Key header)",
                            {"WWW-Authenticate": "Bearer"})
    return None
