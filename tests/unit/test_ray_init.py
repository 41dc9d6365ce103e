"""The private Ray cluster's start-up refuses settings that would open it up (before starting it)."""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.runtime.ray_init import check_private_settings


def test_default_settings_pass():
    check_private_settings(load_config(), environ={})
    check_private_settings(load_config(), environ={"RAY_AUTH_MODE": "token"})


@pytest.mark.parametrize("mode", ["disabled", "k8s", ""])
def test_auth_mode_other_than_token_is_refused(mode):
    with pytest.raises(ConfigError, match=f"RAY_AUTH_MODE={mode}: .*token auth"):
        check_private_settings(load_config(), environ={"RAY_AUTH_MODE": mode})


def test_non_loopback_node_ip_is_refused_even_without_the_config_check():
    cfg = load_config()
    cfg.ray = dataclasses.replace(cfg.ray, node_ip="0.0.0.0")  # built in code: Config.check never ran
    with pytest.raises(ConfigError, match="ray.node_ip = '0.0.0.0'"):
        check_private_settings(cfg, environ={})
