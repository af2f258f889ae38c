"""Signed firmware bundles: what `nalox diag firmware sign` makes and `... update` checks before sending.

A bundle is a zip file:

    manifest.json   {"format": 1, "version": "0.3.0", "model": "nalox-esp32-6",
                     "files": [{"name": "firmware_py/codec.py", "size": 21345, "sha256": "..."}, ...]}
    manifest.sig    Ed25519 signature (64 raw bytes) over the exact bytes of manifest.json
    firmware_py/... the files, as listed

Keys: a private key is a PEM file (`firmware keygen`, or `openssl genpkey -algorithm ed25519`); a
trusted public key in unit.toml is the base64 of its 32 raw bytes. The signature covers the
manifest, the manifest covers every file by SHA-256, so one check proves every byte.
Bounds (the board's too): 32 files, 64 KiB each, 256 KiB in all; the zip itself at most 1 MiB.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controller.errors import ControllerError

MAX_IMAGE = 1024 * 1024
MAX_FILES = 32
MAX_FILE = 64 * 1024
MAX_TOTAL = 256 * 1024
NAME = re.compile(r"^firmware_py/[a-z0-9_]{1,40}\.py$")
VERSION = re.compile(r"^\d{1,4}\.\d{1,4}\.\d{1,4}$")
MODEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")


class BundleError(ControllerError):
    """A bundle that cannot be made, read or trusted; the message says what was expected and what came."""


@dataclass(frozen=True)
class Bundle:
    version: str
    model: str
    files: dict[str, bytes]  # name -> content, in manifest order
    manifest: bytes
    signature: bytes

    @property
    def size(self) -> int:
        return sum(len(d) for d in self.files.values())


def parse_version(text: str) -> tuple[int, ...]:
    if not VERSION.match(text):
        raise BundleError(f"version: expected MAJOR.MINOR.PATCH like 0.3.0, got {text!r}")
    return tuple(int(part) for part in text.split("."))


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def keygen(path: Path) -> str:
    """Write a new private key (PEM, mode 0600) to `path`; returns the public key text for unit.toml."""
    if path.exists():
        raise BundleError(f"{path}: expected a new file for the private key, found one already")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return public_key_text(key)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"{path}: expected an unencrypted PEM private key, got: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def trusted_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise BundleError(f"trusted key {text[:16]!r}...: expected the base64 of 32 raw Ed25519 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def collect(src: Path) -> dict[str, bytes]:
    """The firmware files of a firmware_py directory, named as the board stores them."""
    files = {f"firmware_py/{p.name}": p.read_bytes() for p in sorted(src.glob("*.py"))}
    if not files:
        raise BundleError(f"{src}: expected a firmware_py directory with .py files, found none")
    return files


def _manifest(version: str, model: str, files: dict[str, bytes]) -> bytes:
    parse_version(version)
    if not MODEL.match(model):
        raise BundleError(f"model: expected lower-case letters, digits, '.', '_' or '-', got {model!r}")
    _check_files(files)
    listing = [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()]
    return json.dumps({"format": 1, "version": version, "model": model, "files": listing},
                      indent=1).encode()


def _check_files(files: dict[str, bytes]) -> None:
    if not 0 < len(files) <= MAX_FILES:
        raise BundleError(f"files: expected 1..{MAX_FILES}, got {len(files)}")
    for name, data in files.items():
        if not NAME.match(name):
            raise BundleError(f"file name {name!r}: expected firmware_py/<lower_case>.py")
        if len(data) > MAX_FILE:
            raise BundleError(f"{name}: expected at most {MAX_FILE} bytes, got {len(data)}")
    total = sum(len(d) for d in files.values())
    if total > MAX_TOTAL:
        raise BundleError(f"bundle: expected at most {MAX_TOTAL} bytes of files, got {total}")


def sign(files: dict[str, bytes], key: Ed25519PrivateKey, version: str, model: str, out: Path) -> Bundle:
    manifest = _manifest(version, model, files)
    signature = key.sign(manifest)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", manifest)
        z.writestr("manifest.sig", signature)
        for name, data in files.items():
            z.writestr(name, data)
    out.write_bytes(buf.getvalue())
    return Bundle(version, model, dict(files), manifest, signature)


def read(path: Path) -> Bundle:
    """Open a bundle and check it is whole (every file as its manifest says); not yet trusted."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the bundle: {exc}") from None
    if len(raw) > MAX_IMAGE:
        raise BundleError(f"{path}: expected at most {MAX_IMAGE} bytes, got {len(raw)}")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            names = set(z.namelist())
            if not {"manifest.json", "manifest.sig"} <= names or len(names) > MAX_FILES + 2:
                raise BundleError(f"{path}: expected manifest.json, manifest.sig and the files, got "
                                  f"{sorted(names)[:8]}")
            manifest = z.read("manifest.json")
            signature = z.read("manifest.sig")
            info = json.loads(manifest)
            listing = info["files"]
            files = {}
            for entry in listing:
                if entry["name"] not in names:
                    raise BundleError(f"{path}: manifest lists {entry['name']}, the zip has no such file")
                if z.getinfo(entry["name"]).file_size > MAX_FILE:
                    raise BundleError(f"{path}: {entry['name']} is larger than {MAX_FILE} bytes")
                files[entry["name"]] = z.read(entry["name"])
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise BundleError(f"{path}: expected a firmware bundle (zip with manifest.json), got: {exc}") \
            from None
    _check_files(files)
    for entry in listing:
        data = files[entry["name"]]
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BundleError(f"{path}: {entry['name']} does not match its SHA-256 in the manifest")
    version, model = str(info.get("version")), str(info.get("model"))
    parse_version(version)
    return Bundle(version, model, files, manifest, signature)


def verify(bundle: Bundle, trusted: list[str]) -> str:
    """The trusted key (text) whose signature the bundle carries; BundleError when none does."""
    if not trusted:
        raise BundleError("signature: no trusted keys configured ([firmware] trusted_keys in unit.toml)")
    for text in trusted:
        try:
            trusted_key(text).verify(bundle.signature, bundle.manifest)
            return text
        except InvalidSignature:
            continue
    raise BundleError(f"signature: the bundle ({bundle.version} for {bundle.model}) is not signed by any of "
                      f"the {len(trusted)} trusted keys; refused before sending anything")
