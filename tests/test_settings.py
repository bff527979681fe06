"""Settings: their defaults, where they come from and in which order, and how bad ones are told."""

from datetime import timedelta
from pathlib import Path

import pytest

from tsapi.settings import Settings, SettingsError, load_settings, redact_url


def test_defaults(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.database_url is None
    assert settings.data_dir == Path("tsapi-data")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.partition_interval == timedelta(days=1)
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings.max_rows_per_request == 100_000
    assert (settings.default_limit, settings.max_limit) == (100, 10_000)
    assert (settings.pool_min_size, settings.pool_max_size, settings.pool_timeout) == (2, 10, 10.0)
    assert (settings.log_level, settings.log_format) == ("info", "auto")


def test_flags_win_over_the_environment_which_wins_over_tsapi_toml(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "tsapi.toml").write_text('port = 1001\nhost = "0.0.0.0"\nmax_limit = 500\n')
    monkeypatch.setenv("TSAPI_PORT", "1002")
    monkeypatch.setenv("TSAPI_HOST", "::1")
    settings = load_settings(port=1003, host=None)  # None: the flag was not given
    assert (settings.port, settings.host, settings.max_limit) == (1003, "::1", 500)


def test_config_names_another_file_instead_of_the_one_in_the_working_directory(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "tsapi.toml").write_text("port = 1001\nmax_limit = 500\n")
    other = clean_env / "elsewhere" / "prod.toml"
    other.parent.mkdir()
    other.write_text('port = 2001\npartition_interval = "6h"\n')
    monkeypatch.setenv("TSAPI_PARTITION_INTERVAL", "2h")
    settings = load_settings(config_file=other)
    assert settings.port == 2001
    assert settings.max_limit == 10_000  # ./tsapi.toml is not read at all
    assert settings.partition_interval == timedelta(hours=2)


def test_a_missing_config_file_is_an_error(clean_env: Path) -> None:
    with pytest.raises(SettingsError, match=r"config file nowhere\.toml does not exist"):
        load_settings(config_file=Path("nowhere.toml"))


def test_an_empty_environment_variable_counts_as_unset(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSAPI_DATABASE_URL", "")
    assert load_settings().database_url is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TSAPI_PORT", "http", "port (from TSAPI_PORT): Input should be a valid integer"),
        ("TSAPI_PORT", "70000", "port (from TSAPI_PORT): Input should be less than or equal"),
        ("TSAPI_MAX_LIMIT", "0", "max_limit (from TSAPI_MAX_LIMIT): Input should be greater"),
        (
            "TSAPI_PARTITION_INTERVAL",
            "daily",
            "partition_interval (from TSAPI_PARTITION_INTERVAL): 'daily' is not a duration",
        ),
        ("TSAPI_LOG_LEVEL", "loud", "log_level (from TSAPI_LOG_LEVEL): Input should be 'debug'"),
        ("TSAPI_POOL_MIN_SIZE", "20", "pool_min_size (20) is more than pool_max_size (10)"),
    ],
)
def test_a_bad_environment_value_is_named_with_its_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert message in str(error.value)


def test_bad_values_in_a_file_and_a_flag_are_each_named_with_their_source(
    clean_env: Path,
) -> None:
    (clean_env / "tsapi.toml").write_text('default_limit = "many"\nprot = 80\n')
    with pytest.raises(SettingsError) as error:
        load_settings(port=-1)
    assert str(error.value).splitlines() == [
        "port (from --port): Input should be greater than or equal to 0 (got -1)",
        "default_limit (from tsapi.toml): Input should be a valid integer, unable to parse"
        " string as an integer (got 'many')",
        "prot (in tsapi.toml) is not a setting",
    ]


def test_a_file_that_is_not_toml_is_named(clean_env: Path) -> None:
    (clean_env / "tsapi.toml").write_text("port = \n")
    with pytest.raises(SettingsError, match=r"^tsapi.toml: Invalid value \(at line 1"):
        load_settings()


def test_a_bad_database_url_is_refused_without_echoing_it(clean_env: Path) -> None:
    (clean_env / "tsapi.toml").write_text("database_url = 5432\n")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value) == "database_url (from tsapi.toml): Input should be a valid string"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://tsapi:s3cret@db:5432/tsapi", "postgresql://tsapi:***@db:5432/tsapi"),
        ("postgresql://tsapi:p%40ss@db/tsapi", "postgresql://tsapi:***@db/tsapi"),
        ("postgresql://:s3cret@db/tsapi", "postgresql://:***@db/tsapi"),
        (
            "postgresql://db/tsapi?sslmode=require&password=s3cret",
            "postgresql://db/tsapi?sslmode=require&password=***",
        ),
        ("postgresql://tsapi@db/tsapi", "postgresql://tsapi@db/tsapi"),
        ("postgresql://[db:s3cret@x/tsapi", "<unparsable URL>"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_every_setting_has_a_description() -> None:
    undescribed = [
        name for name, field in Settings.model_fields.items() if not (field.description or "")
    ]
    assert undescribed == []
