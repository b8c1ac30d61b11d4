"""Configuration: one validated schema, errors that name the key, secrets only from the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see only the files they write, never a developer's config or data directory."""
    monkeypatch.delenv("CHATSUM_CONFIG", raising=False)
    monkeypatch.setenv("CHATSUM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("toml", "key", "hint"),
    [
        ("[storage]\nbogus = 1\n", "storage.bogus", "unknown key"),
        ("colour = 'blue'\n", "colour", "unknown key"),
        ("[windows]\nmax_tokens = 'lots'\n", "windows.max_tokens", "integer"),
        ("[telegram]\nenabled = 'maybe'\n", "telegram.enabled", "boolean"),
        ("[windows]\ngap_minutes = -5\n", "windows.gap_minutes", "greater than 0"),
        ("[digest]\ndefault_time = '25:00'\n", "digest.default_time", "HH:MM"),
        ("[digest]\ndefault_timezone = 'Mars/Olympus'\n", "digest.default_timezone", "IANA"),
        ("[model]\nbackend = 'gpt'\n", "model.backend", "llama_cpp"),
        ("[model]\ncandidates = 0\n", "model.candidates", "greater than or equal to 1"),
        ("[model]\ncandidate_temperature = 0\n", "model.candidate_temperature", "greater than 0"),
    ],
)
def test_bad_config_stops_startup_naming_the_key(tmp_path: Path, toml: str, key: str, hint: str) -> None:
    path = _write(tmp_path, toml)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert key in str(err.value) and hint in str(err.value)
    assert str(path) in str(err.value)

    code, _out, stderr = _run("--config", str(path), "chats")
    assert code == 2
    assert stderr.startswith("error: invalid configuration")
    assert key in stderr
    assert "Traceback" not in stderr


def test_bad_config_touches_no_database(tmp_path: Path) -> None:
    path = _write(tmp_path, "[windows]\nmax_tokens = 0\n")
    db_file = tmp_path / "never.db"
    code, _, stderr = _run("--config", str(path), "--db", f"sqlite:///{db_file}", "chats")
    assert code == 2 and "windows.max_tokens" in stderr
    assert not db_file.exists()


@pytest.mark.parametrize("key", ["token", "bot_token", "signing_secret", "api_key"])
def test_secret_in_file_is_refused_without_echoing_it(tmp_path: Path, key: str) -> None:
    section = "slack" if "secret" in key or key == "bot_token" else "telegram"
    path = _write(tmp_path, f"[{section}]\n{key} = 'xoxb-very-secret-value'\n")
    code, out, stderr = _run("--config", str(path), "config")
    assert code == 2
    assert f"{section}.{key}" in stderr and "environment variable" in stderr
    assert "xoxb-very-secret-value" not in stderr + out


def test_config_command_redacts_environment_secrets(tmp_path: Path) -> None:
    path = _write(tmp_path, "[windows]\nmax_tokens = 2048\n")
    env = {"CHATSUM_TELEGRAM_TOKEN": "123456:telegram-secret", "CHATSUM_SLACK_SIGNING_SECRET": "sig-secret"}
    code, out, _ = _run("--config", str(path), "--db", "postgresql://chatsum:db-password@db.example/chatsum",
                        "config", env=env)
    assert code == 0
    shown = json.loads(out)
    assert shown["windows"]["max_tokens"] == 2048
    secrets = shown["secrets (from environment)"]
    assert secrets["CHATSUM_TELEGRAM_TOKEN"] == "set (redacted)"
    assert secrets["CHATSUM_SLACK_SIGNING_SECRET"] == "set (redacted)"
    assert secrets["CHATSUM_SLACK_BOT_TOKEN"] == "not set"
    for secret in ("telegram-secret", "sig-secret", "db-password"):
        assert secret not in out
    assert shown["effective"]["database_url"].startswith("postgresql://chatsum:***@db.example")


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("[windows]\ngap_minutes = 12.5\n", encoding="utf-8")
    monkeypatch.setenv("CHATSUM_CONFIG", str(other))
    code, out, _ = _run("config")
    assert code == 0 and json.loads(out)["windows"]["gap_minutes"] == 12.5


def test_missing_explicit_config_and_broken_toml(tmp_path: Path) -> None:
    code, _, stderr = _run("--config", str(tmp_path / "nope.toml"), "config")
    assert code == 2 and "config file not found" in stderr and "nope.toml" in stderr

    path = _write(tmp_path, "[windows\nmax_tokens = 1\n")
    code, _, stderr = _run("--config", str(path), "config")
    assert code == 2 and "not valid TOML" in stderr


def test_no_config_file_means_defaults(tmp_path: Path) -> None:
    code, out, _ = _run("config")
    assert code == 0
    shown = json.loads(out)
    assert shown["windows"] == Config().windows.model_dump(mode="json")
    assert shown["effective"]["data_dir"] == str(tmp_path / "data")


def test_repository_config_toml_states_the_defaults() -> None:
    """The shipped config.toml documents every key with its default, so loading it changes nothing."""
    shipped = load_config(ROOT / "config.toml")
    assert shipped.model_dump() == Config().model_dump()
