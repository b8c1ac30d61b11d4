"""The one configuration schema of chatsum.

Every section of ``config.toml`` is a pydantic model here, validated once at start-up. Unknown keys are
refused (a typo must not silently fall back to a default), and every error names the dotted key.
Secrets are never read from the file: they come from environment variables only (see ``Secrets``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

DEFAULT_CONFIG_PATH = Path("config.toml")
ENV_CONFIG = "CHATSUM_CONFIG"
ENV_DATA_DIR = "CHATSUM_DATA_DIR"


class ConfigError(Exception):
    """Raised with a message a person can act on: which key, what was wrong, what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class StorageConfig(_Section):
    data_dir: str = Field(
        default="~/.local/share/chatsum",
        description="Directory for the SQLite database, model cache and run outputs.",
    )
    url: str = Field(
        default="",
        description="Any SQLAlchemy URL; empty means sqlite:///<data_dir>/chatsum.db.",
    )
    busy_timeout_ms: Annotated[int, Field(ge=0, le=600_000)] = 5000
    import_batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 5000


class WindowsConfig(_Section):
    gap_minutes: Annotated[float, Field(gt=0, le=7 * 24 * 60)] = 30.0
    max_tokens: Annotated[int, Field(ge=64, le=1_000_000)] = 3000
    max_message_tokens: Annotated[int, Field(ge=16, le=1_000_000)] = 600


class LlamaCppConfig(_Section):
    model: str = Field(
        default="qwen2.5-coder-1.5b",
        description="A built-in name (qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, smollm2-135m) or a .gguf path.",
    )
    n_ctx: Annotated[int, Field(ge=512, le=131072)] = 8192
    n_threads: Annotated[int, Field(ge=0, le=512)] = 0
    n_gpu_layers: Annotated[int, Field(ge=-1)] = 0
    extra_buffers: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="llama.cpp's repacking/AMX weight buffers; auto = off on AMX CPUs, where they crash.",
    )
    prefix_cache_mb: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        default=512,
        description="Disk kept for evaluated instruction prefixes (<data_dir>/prefix-cache), so a new "
        "process starts warm; 0 = off.",
    )


class TransformersConfig(_Section):
    path: str = Field(default="", description="HF causal-LM directory or hub id.")
    gguf_file: str = ""
    adapter: str = Field(default="", description="Optional peft LoRA adapter directory.")
    load_in_4bit: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"


class OpenAIConfig(_Section):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api_key_env: str = "CHATSUM_OPENAI_API_KEY"
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    json_schema: bool = True
    parallel: Annotated[int, Field(ge=1, le=64)] = 1


class ModelConfig(_Section):
    backend: Literal["llama_cpp", "transformers", "openai"] = "llama_cpp"
    language: str = Field(default="auto", description="'auto' (detect) or a language code such as en, zh.")
    max_new_tokens: Annotated[int, Field(ge=16, le=32768)] = 1024
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    candidates: Annotated[int, Field(ge=1, le=8)] = 8
    candidate_temperature: Annotated[float, Field(gt=0, le=2)] = 0.7
    missed_topics: bool = True
    seed: int = 0
    llama_cpp: LlamaCppConfig = LlamaCppConfig()
    transformers: TransformersConfig = TransformersConfig()
    openai: OpenAIConfig = OpenAIConfig()

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        if v != "auto" and not (2 <= len(v) <= 8 and v.replace("-", "").isalpha()):
            raise ValueError("must be 'auto' or a language code such as 'en' or 'zh'")
        return v


class PrivacyConfig(_Section):
    retention_days: Annotated[int, Field(ge=0, le=36500)] = 0
    allowed_chats: list[str] = Field(default_factory=list, description="Empty means every chat.")


class TelegramConfig(_Section):
    enabled: bool = False
    api_base_url: str = "https://api.telegram.org/bot"
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str = ""
    webhook_listen: str = "127.0.0.1"
    webhook_port: Annotated[int, Field(ge=1, le=65535)] = 8443


class SlackConfig(_Section):
    enabled: bool = False
    mode: Literal["socket", "http"] = "socket"
    api_base_url: str = "https://slack.com/api/"
    http_port: Annotated[int, Field(ge=1, le=65535)] = 3000
    http_listen: str = Field(default="127.0.0.1", description="Address the HTTP mode listens on.")
    http_path: str = Field(default="/slack/events", description="Request URL path of HTTP mode.")
    settings_by: Literal["workspace_admins", "channel_creator"] = "workspace_admins"

    @field_validator("http_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise ValueError("must be a URL path starting with '/', such as '/slack/events'")
        return v


class DigestConfig(_Section):
    default_time: str = "09:00"
    default_timezone: str = "UTC"
    min_new_messages: Annotated[int, Field(ge=0)] = 10
    grace_minutes: Annotated[int, Field(ge=0, le=24 * 60)] = 120

    @field_validator("default_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        h, _, m = v.partition(":")
        if not (h.isdigit() and m.isdigit() and 0 <= int(h) < 24 and 0 <= int(m) < 60 and len(m) == 2):
            raise ValueError("must be HH:MM, 00:00 to 23:59")
        return v

    @field_validator("default_timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("must be an IANA time zone such as 'Europe/Berlin' or 'UTC'") from exc
        return v


class FinetuneConfig(_Section):
    base_model: str = "qwen2.5-coder-0.5b"
    output_dir: str = ""
    lora_r: Annotated[int, Field(ge=1, le=1024)] = 16
    lora_alpha: Annotated[int, Field(ge=1)] = 32
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"])
    neftune_noise_alpha: Annotated[float, Field(ge=0)] = 5.0
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 2e-4
    epochs: Annotated[float, Field(gt=0)] = 1.0
    max_steps: int = -1
    batch_size: Annotated[int, Field(ge=1)] = 4
    grad_accum: Annotated[int, Field(ge=1)] = 1
    max_seq_len: Annotated[int, Field(ge=32)] = 512
    seed: int = 42
    load_in_4bit: bool = False
    gradient_checkpointing: bool = True
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"


class Config(_Section):
    storage: StorageConfig = StorageConfig()
    windows: WindowsConfig = WindowsConfig()
    model: ModelConfig = ModelConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    telegram: TelegramConfig = TelegramConfig()
    slack: SlackConfig = SlackConfig()
    digest: DigestConfig = DigestConfig()
    finetune: FinetuneConfig = FinetuneConfig()

    @property
    def data_dir(self) -> Path:
        override = os.environ.get(ENV_DATA_DIR)
        return Path(override or self.storage.data_dir).expanduser()

    @property
    def database_url(self) -> str:
        if self.storage.url:
            return self.storage.url
        return f"sqlite:///{self.data_dir / 'chatsum.db'}"


class Secrets(BaseModel):
    """Secrets come from the environment only, so a config file can be shared or committed safely."""

    telegram_token: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    telegram_webhook_secret: SecretStr | None = None

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "telegram_token": "CHATSUM_TELEGRAM_TOKEN",
        "slack_bot_token": "CHATSUM_SLACK_BOT_TOKEN",
        "slack_app_token": "CHATSUM_SLACK_APP_TOKEN",
        "slack_signing_secret": "CHATSUM_SLACK_SIGNING_SECRET",
        "telegram_webhook_secret": "CHATSUM_TELEGRAM_WEBHOOK_SECRET",
    }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Secrets:
        env = os.environ if environ is None else environ
        values = {field: env.get(name) or None for field, name in cls.ENV_NAMES.items()}
        return cls.model_validate(values)


_SECRET_LIKE = ("token", "secret", "password", "api_key")


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden" and any(s in key.lower() for s in _SECRET_LIKE):
            lines.append(f"  {key}: secrets are not read from the config file; set the environment variable "
                         "instead (see the comments at the top of config.toml)")
            continue
        if e["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in e["loc"][:-1]) or "top level"
            lines.append(f"  {key}: unknown key (not allowed in [{parent}])")
            continue
        lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate the config; no file at the default location means all defaults."""
    explicit = path is not None or ENV_CONFIG in os.environ
    p = Path(path if path is not None else os.environ.get(ENV_CONFIG, DEFAULT_CONFIG_PATH)).expanduser()
    if not p.exists():
        if explicit:
            raise ConfigError(f"config file not found: {p}")
        return Config()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {p} is not valid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {p}: {err}") from None
    return parse_config(data, str(p))


def redacted(config: Config, secrets: Secrets | None = None) -> dict[str, Any]:
    """The effective configuration as a dict, with secrets shown only as set / not set."""
    out = config.model_dump(mode="json")
    sec = secrets or Secrets.from_env()
    out["secrets (from environment)"] = {
        Secrets.ENV_NAMES[name]: ("set (redacted)" if getattr(sec, name) is not None else "not set")
        for name in Secrets.ENV_NAMES
    }
    if config.storage.url:  # a database URL may carry a password
        out["storage"]["url"] = _redact_url(config.storage.url)
    out["effective"] = {"data_dir": str(config.data_dir), "database_url": _redact_url(config.database_url)}
    return out


def _redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"
