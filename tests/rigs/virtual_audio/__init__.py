"""Virtual audio devices on PulseAudio, for tests and benchmarks without a sound card.

Layout (all at one rate, 48 kHz by default, all on one PulseAudio clock)::

    kokoro_bus   null sink, 2 channels: front-left = speaker, front-right = mouth
    kokoro_spk   mono remap sink -> kokoro_bus front-left   (the engine's speaker, default sink)
    user_mouth   mono remap sink -> kokoro_bus front-right  (the user's mouth; its monitor
                                                            is the engine's mic, default source)
    kokoro_void  mono null sink: where the defaults point while a device is unplugged

Why a bus: ``kokoro_bus.monitor`` holds what the engine played (left) and what its mic
heard (right) rendered by the same PulseAudio render call, so one stereo recording relates
the two exactly, whatever any stream's latency. The bus has ``norewinds=1``: with rewinds
(PulseAudio's default) every stream start may rewind the sink, and a PortAudio duplex
stream's output->recording offset then differed per stream (56-76 ms measured) and shifted
within one; without, it was a constant 60.0 ms (65.0 ms in some streams) and the module-loopback
echo stays exact while the engine opens and closes streams.

Every sink gets a keep-alive ``pacat --latency-msec=20`` (a stream that never gets data,
so silence): an idle null sink runs at a ~2 s latency, and a recording of its monitor then
gets its first audio only after ~1.6-2 s. Even with the keep-alive a new null sink needs
~2 s to settle (its idle timer), so ``start()`` takes ~2.2 s.

The probe (``Probe``, ``VirtualAudio.probe``) is a subprocess (``python -m
tests.rigs.virtual_audio probe PLAN``) with one duplex sounddevice stream: it plays clips into
``user_mouth`` and records ``kokoro_bus.monitor``. Clips start at a time, on a command, or on a
rule about the recorded speaker ("1.5 s after the speaker becomes non-silent"). Its
PULSE_SINK / PULSE_SOURCE live only in the subprocess environment.

``python -m tests.rigs.virtual_audio up`` starts the devices and holds them until Ctrl-C.

Modules: ``pulse`` (names, pactl calls, the server and the lock), ``devices``
(``VirtualAudio``), ``probe`` (``Clip``, ``Probe``, ``ProbeResult``), ``probe_process``
(the probe's subprocess), ``signals`` (levels, onsets, finding a clip), ``__main__`` (the CLI).
"""
