"""The ``broker`` setting (issue 13): its names, what it accepts, and that its password is never printed."""

from __future__ import annotations

import json

import pytest

from klipnote.config import MASK, load_settings, mask_url
from klipnote.errors import ConfigError

PASSWORD = "s3cret-Pa55word"


def test_broker_is_off_by_default():
    assert load_settings(environ={}).broker is None


def test_klipnote_broker_beats_celery_broker_url_and_empty_means_off():
    both = {"KLIPNOTE_BROKER": "redis://a:6379/0", "CELERY_BROKER_URL": "redis://b:6379/0"}
    assert load_settings(environ=both).broker == "redis://a:6379/0"
    assert load_settings(environ={"CELERY_BROKER_URL": "rediss://b:6380/2"}).sources["broker"] == \
        "environment CELERY_BROKER_URL"
    assert load_settings(environ={"KLIPNOTE_BROKER": ""}).broker is None


@pytest.mark.parametrize("url", ["amqp://guest@rabbit//", "localhost:6379", "http://redis:6379"])
def test_only_redis_urls_are_accepted(url):
    with pytest.raises(ConfigError, match="redis:// or rediss://"):
        load_settings(environ={"KLIPNOTE_BROKER": url})


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://:{PASSWORD}@10.0.0.5:6379/0", f"redis://:{MASK}@10.0.0.5:6379/0"),
    (f"rediss://klip:{PASSWORD}@redis.internal:6380/1?ssl_cert_reqs=required",
     f"rediss://klip:{MASK}@redis.internal:6380/1?ssl_cert_reqs=required"),
    (f"redis://:{PASSWORD}@[::1]:6379", f"redis://:{MASK}@[::1]:6379"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
])
def test_mask_url_hides_the_password_only(url, shown):
    assert mask_url(url) == shown


def test_config_show_masks_the_broker_password_and_warns_of_a_readable_file(klipnote, tmp_path):
    cfg = tmp_path / "klipnote.toml"
    cfg.write_text(f'broker = "redis://:{PASSWORD}@redis.internal:6379/0"\n')
    cfg.chmod(0o644)
    env = {"KLIPNOTE_CONFIG": str(cfg)}
    shown = klipnote("config", "show", "--json", env=env, spool=None)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["settings"]["broker"]["value"] == f"redis://:{MASK}@redis.internal:6379/0"
    table = klipnote("config", "show", env=env, spool=None)
    for done in (shown, table):
        assert PASSWORD not in done.stdout + done.stderr
    assert "holds broker and every user may read it" in table.stderr + table.stdout


@pytest.mark.parametrize("command", ["dispatch", "flower"])
def test_broker_commands_without_a_broker_say_how_to_set_one(klipnote, command):
    done = klipnote(command)
    assert done.returncode == 2
    assert done.stderr.startswith("klipnote: no broker is set: set KLIPNOTE_BROKER")
    assert len(done.stderr.splitlines()) == 1
