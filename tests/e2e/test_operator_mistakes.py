"""The commonest operator mistakes get one line that names the fix, never a traceback, and
none is accepted in silence: ``check-config`` refuses what ``serve`` would refuse and warns
about guards that can never apply.

``serve`` runs as a real ``python -m spendgate`` process (a taken port, a missing folder);
``check-config`` through click's CliRunner.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from e2e.process import create_key_direct, gateway_env, spendgate_cli, write_config
from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI
from spendgate.cli.main import cli
from spendgate.config import load_config
from spendgate.errors import ConfigError

SIM_URL = "http://127.0.0.1:9"  # never contacted
ENV: dict[str, str | None] = {
    "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
    "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
    "SPENDGATE_CONFIG": None,
}


def check_config(path: Path) -> Result:
    return CliRunner().invoke(cli, ["check-config", "-c", str(path)], env=ENV)


def one_line_error(stderr: str) -> str:
    """The whole of stderr: one ``Error:`` line, no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    return lines[0]


# ---------------------------------------------------------------------------- serve


@pytest.mark.slow
def test_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, SIM_URL)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = spendgate_cli("serve", "-c", str(config), "--port", str(port))
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert f"127.0.0.1:{port} is already in use" in line
    assert "--port or server.port" in line
    assert "Unclosed" not in done.stderr


@pytest.mark.slow
def test_serve_with_metrics_port_taken_names_metrics_port(tmp_path: Path) -> None:
    """The gateway's own port is free, ``metrics.port`` is taken: the line names
    ``metrics.port`` and its address (it said the gateway's port was in use and to change
    ``--port or server.port``, which would not help)."""
    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        config = write_config(
            tmp_path, SIM_URL, configure=lambda data: data.update(metrics={"port": metrics_port})
        )
        done = spendgate_cli("serve", "-c", str(config), "--port", str(port))
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert line == (
        f"Error: cannot start: 127.0.0.1:{metrics_port} (metrics.port) is already in use "
        "(another spendgate, or another program, listens there): stop it, or choose another "
        "port with metrics.port."
    )


def test_check_config_warns_when_metrics_port_is_the_gateway_port(tmp_path: Path) -> None:
    """`serve` could never start such a config (the gateway takes the port first); check-config
    said OK."""

    def same_port(data: dict[str, Any]) -> None:
        data["server"]["port"] = 8731
        data["metrics"] = {"port": 8731}

    result = check_config(write_config(tmp_path, SIM_URL, configure=same_port))
    assert result.exit_code == 0, result.output
    assert (
        "warning: metrics.port: 8731 is server.port too, so `spendgate serve` would refuse to start"
    ) in result.stderr
    elsewhere = check_config(
        write_config(tmp_path, SIM_URL, configure=lambda d: d.update(metrics={"port": 8732}))
    )
    assert "metrics.port" not in elsewhere.stderr


def test_serve_refuses_a_port_out_of_range(tmp_path: Path) -> None:
    config = write_config(tmp_path, SIM_URL)
    for port in ("99999", "-1", "65536"):
        result = CliRunner().invoke(cli, ["serve", "-c", str(config), "--port", port], env=ENV)
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--port'" in result.stderr
        assert "0<=x<=65535" in result.stderr


@pytest.mark.slow
def test_a_missing_storage_folder_is_one_line_from_serve_and_a_warning_from_check_config(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "not-there"
    config = write_config(tmp_path, SIM_URL, db_path=folder / "spendgate.db")
    done = spendgate_cli("serve", "-c", str(config), "--port", "0", env=gateway_env())
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert str(folder / "spendgate.db") in line
    assert "exist and are writable" in line
    checked = check_config(config)
    assert checked.exit_code == 0  # this machine's state, like an unset secret: a warning
    assert checked.stdout.startswith(f"{config}: OK")
    assert checked.stderr.splitlines()[0] == (
        f"warning: storage.url: the folder {folder} does not exist here, so `spendgate "
        f"serve` would refuse to start: create it (mkdir -p {folder}) or change storage.url"
    )
    assert not folder.exists()  # check-config creates nothing


def test_check_config_warns_about_a_storage_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder", encoding="utf-8")
    config = write_config(tmp_path, SIM_URL, db_path=tmp_path / "data" / "spendgate.db")
    checked = check_config(config)
    assert checked.exit_code == 0
    assert f"warning: storage.url: the folder {tmp_path / 'data'} does not exist" in (
        checked.stderr
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_check_config_warns_about_an_unwritable_storage_folder(tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        config = write_config(tmp_path, SIM_URL, db_path=folder / "spendgate.db")
        checked = check_config(config)
    finally:
        folder.chmod(0o755)
    assert checked.exit_code == 0
    assert f"warning: storage.url: the folder {folder} is not writable" in checked.stderr


@pytest.mark.parametrize("url", ["sqlite://spendgate.db", "sqlite://host/x.db", "sqlite:///x?a=1"])
def test_a_sqlite_url_serve_would_refuse_fails_check_config(tmp_path: Path, url: str) -> None:
    def configure(data: dict[str, Any]) -> None:
        data["storage"]["url"] = url

    config = write_config(tmp_path, SIM_URL, configure=configure)
    checked = check_config(config)
    assert checked.exit_code == 1
    assert checked.stderr.startswith(f"Error: {config}: storage.url: {url!r} names no file: ")
    assert "sqlite:///spendgate.db" in checked.stderr  # the fix, spelt out


def test_a_sqlite_url_naming_a_folder_fails_check_config_as_serve(tmp_path: Path) -> None:
    """``sqlite:////some/dir/`` passed check-config (the folder exists and is writable)
    and serve refused it: both refuse it now, naming the file and the key."""
    folder = tmp_path / "data"
    folder.mkdir()
    url = f"sqlite:///{folder}/"

    def configure(data: dict[str, Any]) -> None:
        data["storage"]["url"] = url

    config = write_config(tmp_path, SIM_URL, configure=configure)
    checked = check_config(config)
    assert checked.exit_code == 1
    expected = f"Error: {config}: storage.url: {url!r} names a folder, not a database file"
    assert one_line_error(checked.stderr).startswith(expected)
    assert f"sqlite:///{folder}/spendgate.db" in checked.stderr  # the fix, spelt out
    served = spendgate_cli("serve", "-c", str(config), "--port", "0")
    assert served.returncode == 1
    assert one_line_error(served.stderr).startswith(expected)


def test_check_config_warns_about_a_database_path_that_is_a_folder(tmp_path: Path) -> None:
    """Without the trailing slash the URL may name a file elsewhere, but here it is a
    folder, which serve cannot open: a warning, as a missing folder is."""
    folder = tmp_path / "data"
    folder.mkdir()
    config = write_config(tmp_path, SIM_URL, db_path=folder)
    checked = check_config(config)
    assert checked.exit_code == 0
    assert f"warning: storage.url: {folder} is a folder, not a database file" in checked.stderr
    served = spendgate_cli("serve", "-c", str(config), "--port", "0")
    assert served.returncode == 1


# ---------------------------------------------------------------------------- silent mistakes


def guards(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "ml-monthly", "scope": "team", "match": "mll", "limit_usd": "100"},
        {
            "name": "opus-daily",
            "scope": "user",
            "match": "dana",
            "models": ["claude-opsu-*", "claude-*"],
            "limit_usd": "40",
        },
        {"name": "acme-all", "scope": "org", "match": "acme", "limit_usd": "1000"},
        {"name": "globex", "scope": "org", "match": "globex", "limit_usd": "1000"},
    ]
    data["limits"] = [
        {"name": "bot", "scope": "service", "match": "review-bto", "requests": "10/minute"},
        {"name": "web", "scope": "team", "match": "web", "requests": "10/minute"},
    ]
    data["routing"] = {
        "rules": [
            {
                "name": "no-opus",
                "kind": "rewrite",
                "scope": "team",
                "match": "wbe",
                "models": ["claude-sonnet-*"],
                "to": "claude-haiku-4-5",
            }
        ]
    }


def warnings_of(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [line.removeprefix("warning: ") for line in result.stderr.splitlines()]


def test_check_config_warns_about_matches_that_name_nothing_declared(tmp_path: Path) -> None:
    """Teams and orgs are declared under ``orgs`` and models under ``models``: a match or
    glob naming none of them never applies. Users and services exist only on keys: with no
    database yet, check-config says it could not check them."""
    config = write_config(tmp_path, SIM_URL, configure=guards)
    found = warnings_of(check_config(config))
    assert found == [
        "budgets[0]: budget 'ml-monthly' matches team 'mll', which is not a team declared "
        "under orgs (declared: ml, platform, web); keys can only carry declared teams, so it "
        "never applies",
        "budgets[1]: budget 'opus-daily': models pattern 'claude-opsu-*' matches no declared "
        "model (declared: claude-haiku-4-5, claude-sonnet-4-6, gpt-4o, gpt-4o-mini, "
        "house-model, mystery-model, o4-mini, text-embedding-3-small), so it never applies "
        "to any",
        "budgets[3]: budget 'globex' matches org 'globex', which is not declared under orgs "
        "(declared: acme), so it never applies",
        "routing.rules[0]: rule 'no-opus' matches team 'wbe', which is not a team declared "
        "under orgs (declared: ml, platform, web); keys can only carry declared teams, so it "
        "never applies",
        f"not checked: budgets[1] (user 'dana'), limits[0] (service 'review-bto'): these "
        f"labels exist only on keys, and the database {tmp_path / 'spendgate.db'} does not "
        "exist yet",
    ]


def test_check_config_checks_users_and_services_against_the_keys_in_storage(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, SIM_URL, configure=guards)
    create_key_direct(config, name="dana-laptop", user="dana", service="claude-code", team="ml")
    found = warnings_of(check_config(config))
    assert (
        "limits[0]: limit 'bot' matches service 'review-bto', but no active key in the "
        "database carries that service (it applies once a key does; `spendgate keys list` "
        "shows them)"
    ) in found
    assert not [line for line in found if "'dana'" in line or "not checked" in line]
    create_key_direct(config, name="bot", service="review-bto", team="platform")
    assert not [line for line in warnings_of(check_config(config)) if "review-bto" in line]


def test_a_clean_config_has_no_warnings(tmp_path: Path) -> None:
    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = [
            {"name": "ml", "scope": "team", "match": "ml", "limit_usd": "1"},
            {"name": "all", "scope": "user", "models": ["claude-*"], "limit_usd": "1"},
        ]

    config = write_config(tmp_path, SIM_URL, configure=configure)
    assert warnings_of(check_config(config)) == []


def test_a_duplicated_yaml_key_names_the_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "spendgate.yaml"
    path.write_text(
        "providers:\n"
        "  openai: {kind: openai, base_url: 'https://api.openai.com/v1'}\n"
        "  anthropic: {kind: anthropic, base_url: 'https://api.anthropic.com'}\n"
        "models:\n"
        "  gpt-4o: {provider: openai}\n"
        "  claude-haiku-4-5: {provider: anthropic}\n"
        "  gpt-4o: {provider: anthropic}\n",
        encoding="utf-8",
    )
    message = (
        f"{path}: models.gpt-4o: duplicate key at line 7 (first at line 5); YAML would "
        "silently keep the last one: remove or rename one of them"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == message
    assert caught.value.key == "models.gpt-4o"
    checked = check_config(path)
    assert (checked.exit_code, checked.stdout, checked.stderr) == (1, "", f"Error: {message}\n")


def test_duplicated_keys_inside_lists_are_found_too(tmp_path: Path) -> None:
    path = tmp_path / "spendgate.yaml"
    path.write_text(
        "budgets:\n"
        "  - name: a\n"
        "    scope: team\n"
        "    limit_usd: '1'\n"
        "  - name: b\n"
        "    scope: team\n"
        "    limit_usd: '1'\n"
        "    scope: user\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "budgets[1].scope"
    assert "duplicate key at line 8 (first at line 6)" in str(caught.value)


@pytest.mark.parametrize("how", ["read-only", "locked"])
def test_a_report_on_a_database_that_takes_no_writes_says_what_is_true(
    tmp_path: Path, how: str
) -> None:
    """A report read a read-only or locked database, and printed "SQLite writes fail;
    requests are refused until they succeed again" (no request is served by a report), and
    for a file read-only from the start that it "was made read-only while spendgate ran".
    The report is still printed, and the warning now says what is so."""
    config = write_config(tmp_path, SIM_URL)
    create_key_direct(config, name="kept")
    db = tmp_path / "spendgate.db"
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        if how == "read-only":
            db.chmod(0o444)
        else:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        listed = spendgate_cli("keys", "list", "-c", str(config))
    finally:
        holder.close()
        db.chmod(0o644)
    assert listed.returncode == 0, listed.stderr
    assert "kept" in listed.stdout
    assert "requests are refused" not in listed.stderr
    assert "while spendgate ran" not in listed.stderr
    said = {"read-only": "is read-only", "locked": "database is locked"}[how]
    assert said in listed.stderr, listed.stderr
    assert "reads work" in listed.stderr, listed.stderr


def test_serve_on_a_postgresql_database_that_does_not_exist_says_so(tmp_path: Path) -> None:
    """``serve`` on a PostgreSQL database not created yet said "cannot store a connection:
    database ... does not exist. spendgate writes its database, and the -wal and -shm
    files beside it: check that the file and its folder exist and are writable": SQLite's
    advice for a server's database. It now says it cannot connect, and what to check."""
    url = "postgresql://root@127.0.0.1:5432/hunt2s_never_created"

    def configure(data: dict[str, Any]) -> None:
        data["storage"]["url"] = url

    config = write_config(tmp_path, SIM_URL, configure=configure)
    done = spendgate_cli("serve", "-c", str(config), "--port", "0", env=gateway_env())
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert line.startswith(
        'Error: cannot start: cannot connect to PostgreSQL: database "hunt2s_never_created" '
        "does not exist"
    ), line
    assert "-wal" not in line
    assert "Check that the server is up, the database exists and the user may use it." in line


def test_serve_on_a_database_of_a_newer_spendgate_gives_no_file_advice(tmp_path: Path) -> None:
    """``serve`` on an SQLite file a newer spendgate migrated refuses to start, naming both
    versions, but it went on "spendgate writes its database, and the -wal and -shm files
    beside it: check that the file and its folder exist and are writable": advice for a
    file it cannot write, sending the operator after permissions that are fine."""
    config = write_config(tmp_path, SIM_URL)
    assert spendgate_cli("keys", "list", "-c", str(config), env=gateway_env()).returncode == 0
    database = load_config(config).storage.url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (9999, 'later', 0)")
    conn.close()
    done = spendgate_cli("serve", "-c", str(config), "--port", "0", env=gateway_env())
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert line.startswith(
        "Error: cannot start: the SQLite database's schema is at migration 9999, newer than "
        "this gateway knows (up to "
    ), line
    assert "-wal" not in line
    assert "writable" not in line
