"""Files written atomically, JSON, and content digests: what every layer of the package writes its outputs with.

Integrity: every file the pipeline writes and reads back (artifacts of every runtime, prepared data, the
accuracy / speed / cell JSONs) records a digest of what it holds when written (:func:`content_digest`,
xxHash's XXH3-128: an accidental flip anywhere is caught, and hashing runs at memory speed, a few percent
of reading the file); every read recomputes it and refuses a mismatch with one line (:func:`changed`).
A copy from a backup or a shared cache keeps the file's modification time, so Snakemake would not rerun
its job; the digest is what notices.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from vitcompress.errors import IntegrityError

DIGEST_KEY = "content_digest"  # where a JSON file or a saved dictionary keeps its digest
DIGEST_ALGORITHM = "xxh3_128"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    A crash (or SIGKILL) inside the block leaves at most a ``.tmp`` file that no rule takes as output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, file_mode())  # mkstemp makes it 0600: results shared with a team must stay readable
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_mode() -> int:
    """The mode a new file gets under this process's umask (what ``open`` would give it)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def changed(path: str | Path, what: str = "file") -> IntegrityError:
    """The one-line refusal of a file whose content no longer matches the digest it was written with."""
    return IntegrityError(f"{path}: this {what} changed since it was written (its content digest no longer matches); "
                          f"delete it and re-run the workflow to regenerate it.")


def undigested(path: str | Path, what: str = "file") -> IntegrityError:
    return IntegrityError(f"{path}: this {what} records no content digest (written by hand or by an older vitcompress); "
                          f"delete it and re-run the workflow to regenerate it.")


def content_digest(obj) -> str:
    """A digest of ``obj``: JSON-like values, tensors (dtype, shape, bytes; quantized ones with their scales),
    NumPy arrays and bytes, nested in dicts (keys sorted), lists and tuples. Tensors are hashed in place."""
    import xxhash

    h = xxhash.xxh3_128()
    _feed(h, obj)
    return f"{DIGEST_ALGORITHM}:{h.hexdigest()}"


_SCALARS = (int, float, str, bool, type(None))  # fed as their repr by _feed's last branch


def _feed(h, obj) -> None:
    if isinstance(obj, dict):
        h.update(b"{%d" % len(obj))
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        if all(type(v) in _SCALARS for v in obj):  # the bytes the loop below would feed, in one update
            h.update(b"[%d" % len(obj) + "".join(map(repr, obj)).encode())
            return
        h.update(b"[%d" % len(obj))
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        h.update(b"b%d" % len(obj))
        h.update(obj)
    elif type(obj).__module__ == "numpy" and hasattr(obj, "tobytes"):
        import numpy as np

        a = np.ascontiguousarray(obj)
        h.update(f"a{a.dtype}{a.shape}".encode())
        h.update(memoryview(a.reshape(-1).view(np.uint8)))
    elif type(obj).__module__.startswith("torch") and hasattr(obj, "is_quantized"):
        _feed_tensor(h, obj)
    else:
        h.update(repr(obj).encode())


def _feed_tensor(h, t) -> None:
    import torch

    t = t.detach()
    if t.is_quantized:
        h.update(f"q{t.dtype}{tuple(t.shape)}{t.qscheme()}".encode())
        if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            h.update(repr((t.q_scale(), t.q_zero_point())).encode())
        else:
            _feed(h, [t.q_per_channel_scales(), t.q_per_channel_zero_points(), t.q_per_channel_axis()])
        t = t.int_repr()
    else:
        h.update(f"t{t.dtype}{tuple(t.shape)}".encode())
    t = t.cpu().contiguous().reshape(-1)
    if t.numel():
        h.update(memoryview(t.view(torch.uint8).numpy()))


def seal(obj: dict) -> dict:
    """``obj`` with its content digest under :data:`DIGEST_KEY`."""
    body = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    return {**body, DIGEST_KEY: content_digest(body)}


def check_sealed(obj: dict, path: str | Path, what: str = "file") -> dict:
    """``obj`` without its digest, after checking it; raise IntegrityError for a mismatch or a missing digest."""
    if not isinstance(obj, dict) or DIGEST_KEY not in obj:
        raise undigested(path, what)
    body = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    if content_digest(body) != obj[DIGEST_KEY]:
        raise changed(path, what)
    return body


def write_json(path: str | Path, obj, seal_it: bool = True) -> None:
    """Write ``obj`` as JSON, atomically; a dict gets its content digest (``seal_it=False``: a file only other
    tools read, such as DVC's metrics, stays as it is)."""
    if seal_it and isinstance(obj, dict):
        obj = seal(json.loads(json.dumps(obj)))  # digested as it reads back: tuples are lists, keys strings
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path, check: bool = True) -> dict:
    """A JSON file this project wrote, its digest checked (``check=False``: any JSON file)."""
    try:
        obj = json.loads(Path(path).read_text())
    except json.JSONDecodeError:
        raise IntegrityError(f"{path}: not valid JSON (damaged or truncated); delete it and re-run the workflow to "
                             f"regenerate it.") from None
    return check_sealed(obj, path, "JSON file") if check else obj


def load_yaml(text: str):
    """``yaml.safe_load`` through libyaml's C parser where PyYAML has it (about ten times faster on params.yaml and
    its schema, which every Snakemake call reads at start), the pure-Python one otherwise; the same documents, and
    a syntax error raised by the pure-Python parser, whose messages say more."""
    import yaml

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (a safe loader)
    except yaml.YAMLError:  # the same place, but the pure-Python parser names what it found (a tab, an alias)
        return yaml.safe_load(text)


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# Files another library writes (an ONNX graph, an OpenVINO IR) carry their digest inside, in a metadata
# field: written first as a placeholder of the digest's length, then replaced, in place, by the digest of
# every file's bytes with the placeholder still there. Reading puts the placeholder back and recomputes.
DIGEST_PLACEHOLDER = f"{DIGEST_ALGORITHM}:{'0' * 32}"
_DIGEST_RE = re.compile(rb"xxh3_128:[0-9a-f]{32}")


def _files_digest(contents: list[bytes]) -> str:
    return content_digest([bytes(c) for c in contents])


def seal_files(paths: list[Path]) -> None:
    """Replace the digest placeholder in ``paths[0]`` by the digest of all ``paths``' bytes."""
    contents = [Path(p).read_bytes() for p in paths]
    if contents[0].count(DIGEST_PLACEHOLDER.encode()) != 1:
        raise ValueError(f"{paths[0]}: expected one digest placeholder in the file")
    digest = _files_digest(contents)
    Path(paths[0]).write_bytes(contents[0].replace(DIGEST_PLACEHOLDER.encode(), digest.encode()))


def files_state(paths: list[Path]) -> str:
    """Whether the digest inside ``paths[0]`` is that of all ``paths``' bytes: "ok", "changed", or
    "missing" (no digest: a file this project did not write, or a damaged one)."""
    contents = [Path(p).read_bytes() for p in paths]
    found = _DIGEST_RE.findall(contents[0])
    if len(found) != 1:
        return "missing"
    contents[0] = contents[0].replace(found[0], DIGEST_PLACEHOLDER.encode())
    return "ok" if _files_digest(contents) == found[0].decode() else "changed"
