"""Sound devices: imported lazily, so file modes work without PortAudio."""
from __future__ import annotations


class AudioDeviceError(RuntimeError):
    pass


def import_sounddevice():
    try:
        import sounddevice
    except OSError as e:  # PortAudio missing
        raise AudioDeviceError(
            f"sounddevice cannot load PortAudio ({e}). Install it: apt-get install libportaudio2. "
            "Without a sound device use: kokoro-engine talk --input IN.wav --output OUT.wav") from None
    return sounddevice


def check_devices(input_device: str = "", output_device: str = "") -> tuple[dict, dict]:
    """Return (input, output) device info or raise AudioDeviceError saying what is missing."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
    except Exception as e:
        raise AudioDeviceError(f"cannot list audio devices: {e}") from None
    found = []
    for kind, want in (("input", input_device), ("output", output_device)):
        try:
            info = sd.query_devices(want or None, kind=kind)
        except Exception:
            have = ", ".join(d["name"] for d in devices) or "none"
            raise AudioDeviceError(
                f"no {kind} audio device{f' named {want!r}' if want else ''} (devices: {have}). "
                "Without a sound device use: kokoro-engine talk --input IN.wav --output OUT.wav") from None
        found.append(info)
    return found[0], found[1]
