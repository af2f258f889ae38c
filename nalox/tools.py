"""What the demo needs from the machine: the system programs (mosquitto, mpv, ffmpeg), a display or
not, and a short test clip per length, made once by the controller's own clip maker and cached."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from controller.cli import make_clip
from nalox.errors import NaloxError

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nalox"
NEEDED = {"mosquitto": "mosquitto", "mpv": "mpv", "ffmpeg": "ffmpeg"}  # program -> Debian package


def require_tools() -> None:
    """Fail early with one clear message when a system program the demo needs is missing."""
    missing = [f"{exe} (Debian package {pkg})" for exe, pkg in NEEDED.items() if not which(exe)]
    if missing:
        raise NaloxError(
            f"nalox demo needs {', '.join(missing)}: not found on PATH or in /usr/sbin; "
            "run `make setup` (installs them with apt) and try again"
        )


def which(exe: str) -> str | None:
    return shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/usr/local/sbin")


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def clip(seconds: float, folder: Path = CACHE) -> Path:
    """A test pattern with a tone, `seconds` long, made once with ffmpeg and kept in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"clip-{seconds:g}s.mp4"
    if path.exists() and path.stat().st_size > 0:
        return path
    part = folder / f"clip-{seconds:g}s.{os.getpid()}.part.mp4"  # another process may make it too
    try:
        make_clip(part, seconds, which("ffmpeg") or "ffmpeg")
    except (OSError, subprocess.CalledProcessError) as e:
        raise NaloxError(f"expected ffmpeg to make {path.name} in {folder}: {e}") from e
    part.rename(path)
    return path
