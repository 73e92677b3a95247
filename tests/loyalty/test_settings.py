"""Settings come from the environment; production refuses to start without its secrets."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def _manage(*args, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=full_env, capture_output=True, text=True, timeout=120
    )


def test_production_without_secret_key_refuses_to_start():
    result = _manage("check", DEBUG="0", ALLOWED_HOSTS="example.com")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_without_allowed_hosts_refuses_to_start():
    result = _manage("check", DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50))
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is not set" in result.stderr


def test_production_settings_pass_check_deploy():
    result = _manage("check", "--deploy", "--fail-level", "WARNING",
                     DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="loyalty.example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_plain_http_switch_is_visible_to_check_deploy():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50),
                     ALLOWED_HOSTS="localhost", LOYALTY_PLAIN_HTTP="1")
    assert result.returncode != 0
    assert "SECURE_SSL_REDIRECT" in result.stdout + result.stderr


def test_configured_urls_start_no_embedded_server(tmp_path, settings):
    """With DATABASE_URL and REDIS_URL set, nothing is started under the state folder."""
    result = _manage(
        "shell", "-c",
        "from django.db import connection; connection.ensure_connection(); "
        "from django.core.cache import cache; cache.set('k', 1); print('connected', cache.get('k'))",
        DEBUG="1", DATABASE_URL=os.environ["DATABASE_URL"], REDIS_URL=os.environ["REDIS_URL"],
        LOYALTY_STATE_DIR=str(tmp_path / "state"),
    )
    assert result.returncode == 0, result.stderr
    assert "connected 1" in result.stdout
    assert not (tmp_path / "state").exists()


def test_embedded_default_starts_servers_in_state_folder(tmp_path):
    """With no URLs, a fresh state folder gets its own PostgreSQL and Redis on first use."""
    state = tmp_path / "s"
    env = {"DEBUG": "1", "LOYALTY_STATE_DIR": str(state)}
    try:
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from django.db import connection; connection.ensure_connection(); "
             "from django.core.cache import cache; cache.set('k', 2); print('connected', cache.get('k'))"],
            cwd=BASE_DIR, capture_output=True, text=True, timeout=180,
            env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")} | env,
        )
        assert result.returncode == 0, result.stderr
        assert "connected 2" in result.stdout
        assert (state / "pgdata" / "PG_VERSION").exists()
    finally:
        subprocess.run(
            [sys.executable, "-c", "from loyalty import embedded; embedded.redis_stop(); embedded.postgres_stop()"],
            cwd=BASE_DIR, env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")} | env,
            timeout=60,
        )
