"""Fixtures for the kiosk: a real X server (Xvfb), a real mpv drawing on it, OCR and screenshots."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageGrab, ImageOps

WIDTH, HEIGHT = 1280, 720
OCR_LANG = {"en": "eng", "es": "spa"}


class Xvfb:
    def __init__(self) -> None:
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write)
        with os.fdopen(read) as fh:
            number = fh.readline().strip()
        assert number.isdigit(), f"expected Xvfb to print its display number, found {number!r}"
        self.display = f":{number}"

    def grab(self) -> Image.Image:
        return ImageGrab.grab(xdisplay=self.display).convert("RGB")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def xvfb() -> Iterator[Xvfb]:
    x = Xvfb()
    yield x
    x.close()


def normalise(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


def ocr(img: Image.Image, lang: str, tmp: Path) -> str:
    """Tesseract on the screenshot made dark-on-light (it reads that best)."""
    path = tmp / "ocr.png"
    ImageOps.invert(ImageOps.grayscale(img)).save(path)
    out = subprocess.run(
        ["tesseract", str(path), "stdout", "-l", OCR_LANG.get(lang, "eng"), "--psm", "3"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode("utf-8", "replace")
    return normalise(out)
