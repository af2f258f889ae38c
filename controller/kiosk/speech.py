"""Speech output of every screen's words in the person's language: espeak-ng (Debian), offline.

One utterance at a time: a new screen cuts the previous one short. `out_dir` writes each utterance to a
WAV file instead of the sound card (tests, and checking a new language pack by ear).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Protocol

from controller import log

LOG = log.get("speech")
# espeak-ng voices for the packs we ship; Tagalog has no espeak-ng voice: Indonesian reads its Latin
# spelling closely enough to be understood (to be checked by a native speaker, like the tl pack).
VOICES = {"en": "en-us", "es": "es-419", "zh": "cmn", "tl": "id", "vi": "vi", "ko": "ko", "hy": "hy"}
MAX_CHARS = 2000


class Speaker(Protocol):
    def say(self, text: str, lang: str) -> Path | None: ...  # the WAV file when writing to files
    def stop(self) -> None: ...


class NullSpeaker:
    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []

    def say(self, text: str, lang: str) -> Path | None:
        self.said.append((lang, text))
        return None

    def stop(self) -> None:
        pass


class EspeakSpeaker:
    def __init__(
        self,
        volume: int = 100,
        rate_wpm: int = 150,
        espeak: str = "espeak-ng",
        voices: dict[str, str] | None = None,
        out_dir: Path | None = None,
    ) -> None:
        self.volume = max(0, min(200, volume))  # espeak-ng amplitude 0..200
        self.rate = rate_wpm
        self.espeak = shutil.which(espeak) or espeak
        self.voices = {**VOICES, **(voices or {})}
        self.out_dir = out_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._n = 0
        self.said: list[tuple[str, str]] = []

    def command(self, lang: str, wav: Path | None = None) -> list[str]:
        args = [self.espeak, "-v", self.voices.get(lang, lang), "-a", str(self.volume), "-s", str(self.rate)]
        if wav is not None:
            args += ["-w", str(wav)]
        return [*args, "--stdin"]

    def say(self, text: str, lang: str) -> Path | None:
        """Start speaking (returns at once); with out_dir, the WAV file it is writing."""
        self.stop()
        text = text[:MAX_CHARS]
        wav = None
        with self._lock:
            self._n += 1
            if self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                wav = self.out_dir / f"speech-{self._n:05d}-{lang}.wav"
            try:
                self._proc = subprocess.Popen(
                    self.command(lang, wav),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                assert self._proc.stdin is not None
                self._proc.stdin.write(text.encode("utf-8"))
                self._proc.stdin.close()
            except OSError as exc:
                LOG.warning("speech_failed", lang=lang, error=str(exc), expected=f"{self.espeak} to run")
                self._proc = None
                return None
            self.said.append((lang, text))
        return wav

    def wait(self, timeout: float = 30.0) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None:
            proc.wait(timeout=timeout)

    def stop(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait(timeout=5)
