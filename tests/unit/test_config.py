"""Configuration: TOML profiles, --set overrides, and errors that name the key."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.config import CONFIG_DIR, Config, ConfigError, load_config, to_dict


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "profile.toml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------ profiles
def test_shipped_profiles_load():
    default = load_config(CONFIG_DIR / "default.toml")
    assert default.vad.endpoint_silence_ms == 500
    assert default.llm.max_tokens == 80
    test = load_config(CONFIG_DIR / "test.toml")
    assert test.engine.log_level == "WARNING"
    assert (test.llm.max_tokens, test.llm.temperature) == (40, 0.0)
    assert isinstance(test.llm.temperature, float)
    assert test.audio.trailing_silence_ms == 1200
    remote = load_config(CONFIG_DIR / "remote_gpu.toml")
    assert (remote.ray.address, remote.ray.model_resource, remote.stt.device) == ("auto", "gpu_node", "cuda")


def test_no_path_means_default_profile():
    assert to_dict(load_config()) == to_dict(load_config(CONFIG_DIR / "default.toml"))


def test_defaults_pass_their_own_checks():
    Config().check()


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_bad_toml_names_the_file(tmp_path):
    p = write(tmp_path, "[vad\nthreshold = 0.5\n")
    with pytest.raises(ConfigError, match="profile.toml"):
        load_config(p)


def test_unknown_key_names_section_and_key(tmp_path):
    p = write(tmp_path, "[vad]\nthreshhold = 0.6\n")
    with pytest.raises(ConfigError, match=r"'vad\.threshhold'") as e:
        load_config(p)
    assert "threshold" in str(e.value)  # the known keys are listed


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown section 'vadd'"):
        load_config(write(tmp_path, "[vadd]\nthreshold = 0.6\n"))


def test_section_must_be_a_table(tmp_path):
    with pytest.raises(ConfigError, match=r"\[vad\] must be a table"):
        load_config(write(tmp_path, "vad = 3\n"))


@pytest.mark.parametrize("line,key,expected", [
    ('[vad]\nendpoint_silence_ms = "500"', "vad.endpoint_silence_ms", "int"),
    ("[vad]\nendpoint_silence_ms = 500.0", "vad.endpoint_silence_ms", "int"),
    ("[vad]\nendpoint_silence_ms = true", "vad.endpoint_silence_ms", "int"),  # bool is not an int here
    ("[llm]\nwarmup = 1", "llm.warmup", "bool"),
    ("[tts]\nvoice = 3", "tts.voice", "str"),
    ('[vad]\nthreshold = "high"', "vad.threshold", "float"),
])
def test_wrong_type_names_the_key(tmp_path, line, key, expected):
    with pytest.raises(ConfigError, match=rf"{key}: expected {expected}"):
        load_config(write(tmp_path, line + "\n"))


def test_int_is_accepted_for_a_float(tmp_path):
    cfg = load_config(write(tmp_path, "[tts]\nspeed = 2\n"))
    assert cfg.tts.speed == 2.0 and isinstance(cfg.tts.speed, float)


def test_profile_only_changes_what_it_names(tmp_path):
    cfg = load_config(write(tmp_path, "[vad]\nendpoint_silence_ms = 700\n"))
    changed = {k for k, v in to_dict(cfg)["vad"].items() if v != dataclasses.asdict(Config().vad)[k]}
    assert changed == {"endpoint_silence_ms"}


# ------------------------------------------------------------------ --set
def test_set_parses_ints_floats_bools_and_strings():
    cfg = load_config(CONFIG_DIR / "test.toml", overrides=[
        "vad.endpoint_silence_ms=400",
        "vad.threshold=0.6",
        "llm.warmup=false",
        "vad.webrtc_gate=true",
        "tts.voice=af_heart",  # a bare string
        'tts.lang="en-gb"',  # a quoted one
        "llm.base_url=http://127.0.0.1:8080/v1",  # a URL is not valid TOML: kept as a string
        "tts.speed=1",  # an int for a float
    ])
    assert cfg.vad.endpoint_silence_ms == 400 and type(cfg.vad.endpoint_silence_ms) is int
    assert cfg.vad.threshold == 0.6
    assert cfg.llm.warmup is False
    assert cfg.vad.webrtc_gate is True
    assert cfg.tts.voice == "af_heart"
    assert cfg.tts.lang == "en-gb"
    assert cfg.llm.base_url == "http://127.0.0.1:8080/v1"
    assert cfg.tts.speed == 1.0 and isinstance(cfg.tts.speed, float)
    assert cfg.llm.max_tokens == 40  # the profile's value survives


def test_set_wins_over_the_profile():
    cfg = load_config(CONFIG_DIR / "test.toml", overrides=["llm.max_tokens=12"])
    assert cfg.llm.max_tokens == 12


def test_set_keeps_everything_after_the_first_equals_sign():
    cfg = load_config(overrides=["llm.base_url=https://h.example/v1?a=b"])
    assert cfg.llm.base_url == "https://h.example/v1?a=b"


def test_set_empty_string():
    cfg = load_config(overrides=["llm.base_url=http://x/v1", "llm.base_url="])
    assert cfg.llm.base_url == ""


@pytest.mark.parametrize("item,key", [
    ("vad.endpoint_silence_ms=abc", "vad.endpoint_silence_ms"),
    ("vad.endpoint_silence_ms=4.5", "vad.endpoint_silence_ms"),
    ("llm.warmup=yes", "llm.warmup"),
    ("vad.threshold=high", "vad.threshold"),
])
def test_set_wrong_type_names_the_key(item, key):
    with pytest.raises(ConfigError, match=rf"^{key}: expected"):
        load_config(overrides=[item])


def test_set_unknown_key_names_it():
    with pytest.raises(ConfigError, match=r"'vad\.nope'"):
        load_config(overrides=["vad.nope=1"])


def test_set_unknown_section():
    with pytest.raises(ConfigError, match="unknown section 'nope'"):
        load_config(overrides=["nope.x=1"])


@pytest.mark.parametrize("item", ["vad.threshold", "threshold=0.5", "a.b.c=1"])
def test_set_malformed(item):
    with pytest.raises(ConfigError, match="--set"):
        load_config(overrides=[item])


# ------------------------------------------------------------------ ranges
@pytest.mark.parametrize("item,key", [
    ("vad.threshold=2", "vad.threshold"),
    ("vad.threshold=0.0", "vad.threshold"),
    ("vad.neg_threshold=0.7", "vad.neg_threshold"),  # above vad.threshold
    ("vad.endpoint_silence_ms=50", "vad.endpoint_silence_ms"),
    ("vad.speculative_silence_ms=600", "vad.speculative_silence_ms"),  # not below the endpoint
    ("vad.webrtc_aggressiveness=4", "vad.webrtc_aggressiveness"),
    ("audio.input_rate=48000", "audio.input_rate"),
    ("audio.input_block_ms=20", "audio.input_block_ms"),
    ("audio.output_block_ms=1", "audio.output_block_ms"),
    ("stt.compute_type=int4", "stt.compute_type"),
    ("stt.device=tpu", "stt.device"),
    ("stt.threads=0", "stt.threads"),
    ("tts.nice=20", "tts.nice"),
    ("llm.max_tokens=0", "llm.max_tokens"),
    ("tts.speed=5", "tts.speed"),
    ("llm.base_url=ftp://example.com", "llm.base_url"),
    ("ray.node_ip=0.0.0.0", "ray.node_ip"),  # the private cluster's servers would listen everywhere
    ("ray.node_ip=192.0.2.2", "ray.node_ip"),
])
def test_out_of_range_value_names_the_key(item, key):
    with pytest.raises(ConfigError, match=rf"^{key}: ") as e:
        load_config(overrides=[item])
    assert "got" in str(e.value)  # and shows the offending value


def test_out_of_range_in_a_profile(tmp_path):
    with pytest.raises(ConfigError, match=r"^vad\.threshold: must be in \(0, 1\) \(got 2\.0\)"):
        load_config(write(tmp_path, "[vad]\nthreshold = 2\n"))


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("overrides, local, spins", [
    ([], True, False),  # embedded LLM shares the CPU: no spinning
    (["llm.base_url=http://127.0.0.1:8080/v1"], True, False),
    (["llm.base_url=http://localhost:11434/v1"], True, False),
    (["llm.base_url=https://api.example.com/v1"], False, True),
    (["llm.base_url=https://api.example.com/v1", "tts.spin=false"], False, False),
    (["tts.spin=true"], True, True),
])
def test_tts_spins_only_when_the_llm_is_elsewhere(overrides, local, spins):
    from pipeline.config import llm_is_local, tts_spins

    cfg = load_config(overrides=overrides)
    assert (llm_is_local(cfg), tts_spins(cfg)) == (local, spins)


def test_a_joined_cluster_keeps_its_own_node_ip():
    # ray.node_ip only names the private cluster's node; a joined cluster binds where it was started
    cfg = load_config(overrides=["ray.address=auto", "ray.node_ip=192.0.2.2"])
    assert cfg.ray.node_ip == "192.0.2.2"


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("::ffff:127.0.0.1", True),  # IPv4 loopback on a dual-stack socket, as Ray's gRPC servers show it
    ("0.0.0.0", False), ("::", False), ("192.0.2.2", False), ("::ffff:192.0.2.2", False), ("fe80::1%eth0", False),
    ("example.com", False), ("", False),
])
def test_is_loopback(host, loopback):
    from pipeline.config import is_loopback

    assert is_loopback(host) is loopback


# ------------------------------------------------------------------ [server]
def test_server_defaults_are_loopback_and_admit_a_seed_001_upload():
    s = Config().server
    assert (s.host, s.port, s.allow_remote, s.cors_origins) == ("127.0.0.1", 8765, False, "")
    # seed 001 file_upload: 100 MiB as base64 (4/3) plus the message's JSON fields
    assert s.ws_max_message_mb * 2**20 > 100 * 2**20 * 4 / 3 + 64 * 1024


@pytest.mark.parametrize("item,key", [
    ("server.port=70000", "server.port"),
    ("server.port=-1", "server.port"),
    ("server.host=example.com", "server.host"),
    ("server.host=", "server.host"),
    ("server.ws_max_message_mb=0", "server.ws_max_message_mb"),
    ("server.ws_max_message_mb=2000", "server.ws_max_message_mb"),
    ("server.ws_auth_timeout_s=0.5", "server.ws_auth_timeout_s"),
    ("server.cors_origins=*", "server.cors_origins"),
    ("server.cors_origins=http://localhost:5173,*", "server.cors_origins"),
    ("server.cors_origins=null", "server.cors_origins"),
    ("server.cors_origins=localhost:5173", "server.cors_origins"),  # no scheme
    ("server.cors_origins=http://localhost:5173/app", "server.cors_origins"),  # a path is not an origin
])
def test_server_out_of_range_names_the_key(item, key):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        load_config(overrides=[item])


def test_server_accepts_addresses_and_origin_lists():
    from pipeline.config import cors_origins

    cfg = load_config(overrides=["server.host=::1", "server.port=0",
                                 "server.cors_origins=http://localhost:5173, tauri://localhost,"])
    assert (cfg.server.host, cfg.server.port) == ("::1", 0)
    assert cors_origins(cfg) == ["http://localhost:5173", "tauri://localhost"]
    assert cors_origins(load_config()) == []


def test_data_dir_follows_xdg_unless_configured(tmp_path, monkeypatch):
    from pipeline.config import data_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert data_dir() == data_dir(Config()) == tmp_path / "kokoro-engine"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert data_dir() == Path.home() / ".local" / "share" / "kokoro-engine"
    assert data_dir(load_config(overrides=[f"server.data_dir={tmp_path}/d"])) == tmp_path / "d"
