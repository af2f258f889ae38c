"""Tests of deploy/: systemd units, udev rule, mpv kiosk settings, install script."""

from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
