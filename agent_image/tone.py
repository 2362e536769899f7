"""The offline agent's voice: a generated two-note chime as 16-bit PCM (pure, stdlib only)."""

from __future__ import annotations

import math
from array import array

SAMPLE_RATE = 24000
FRAME_MS = 20
SAMPLES_PER_FRAME = SAMPLE_RATE * FRAME_MS // 1000


def chime(*, notes: tuple[float, ...] = (660.0, 880.0), note_s: float = 0.3, amplitude: float = 0.3) -> bytes:
    """Mono PCM s16le at SAMPLE_RATE: each note with a short fade in/out so it does not click."""
    samples = array("h")
    per_note = int(SAMPLE_RATE * note_s)
    fade = int(SAMPLE_RATE * 0.01)
    for freq in notes:
        for i in range(per_note):
            envelope = min(1.0, i / fade, (per_note - 1 - i) / fade)
            samples.append(int(32767 * amplitude * envelope * math.sin(2 * math.pi * freq * i / SAMPLE_RATE)))
    return samples.tobytes()


def frames(pcm: bytes) -> list[bytes]:
    """Split PCM into FRAME_MS frames, padding the last one with silence."""
    size = SAMPLES_PER_FRAME * 2
    out = [pcm[i : i + size] for i in range(0, len(pcm), size)]
    if out and len(out[-1]) < size:
        out[-1] = out[-1] + bytes(size - len(out[-1]))
    return out


def silence() -> bytes:
    return bytes(SAMPLES_PER_FRAME * 2)


def peak(frame: bytes) -> int:
    """Largest absolute sample: how tests tell the chime from silence."""
    return max((abs(s) for s in array("h", frame)), default=0)
