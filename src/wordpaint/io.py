"""Atomic file writes and safe weight loading.

Every file wordpaint writes goes to a temporary name in the same folder and is renamed into
place, so an interrupted run never leaves half a PNG, JSON or checkpoint behind. Weights are
safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from wordpaint.errors import ModelLoadError

if TYPE_CHECKING:
    import torch


@cache
def _umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def cache_root() -> Path:
    """wordpaint's cache folder: ``$WORDPAINT_CACHE``, else ``~/.cache/wordpaint``. It holds what
    can be rebuilt (npm packages for the emoji build, the planner LM converted from GGUF,
    EfficientNet-Lite0 features of training images): deleting it loses nothing but time."""
    return Path(os.environ.get("WORDPAINT_CACHE") or Path.home() / ".cache" / "wordpaint")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the mode open() would (0666 less the
    # umask), or every image, JSON and weight file written is unreadable by anyone else
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 -> what mkdir would give
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike, *, what: str = "file") -> dict:
    """Read a JSON object, turning a missing or corrupt file into a :class:`ModelLoadError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"missing {what}: {path}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"corrupt {what} {path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ModelLoadError(f"corrupt {what} {path}: expected a JSON object")
    return obj


def _canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its ``__metadata__`` keys sorted.

    safetensors writes the metadata from a Rust HashMap, in an order that changes from one save
    to the next (safetensors issue #584), so the same weights gave different bytes and checksums.
    Tensor entries are already in a fixed order; only the metadata is reordered here. Layout:
    8-byte little-endian header length, JSON header padded with spaces to 8 bytes, tensor data.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    if not header.get("__metadata__"):
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def save_safetensors(path: str | os.PathLike, tensors: dict, *, metadata: dict[str, str] | None = None) -> None:
    """Save a flat ``name -> tensor`` dict as safetensors, atomically; the same tensors and
    metadata always give the same bytes."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = _canonical_safetensors(save(tensors, metadata=metadata))
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def load_safetensors(path: str | os.PathLike) -> dict:
    """Load a safetensors file, naming the file in the error when it is missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"missing weights file: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"corrupt weights file {path}: {e}") from None


# int8 weight storage: a matrix or kernel W (out, ...) is kept as int8 Q and a float32 scale
# s (out,) with W ~= Q * s (symmetric, one scale per output channel, s = max|W[o]| / 127), under
# the names "NAME" and "NAME" + INT8_SCALE. It is a storage format only: loading turns the
# weights back into floats and every product still runs in float32 (int8 kernels are no faster
# on these CPUs for a model this size, and the point is the file: a quarter of float32's bytes).
INT8_SCALE = ":int8_scale"  # no PyTorch state-dict name holds a colon, so this never clashes


def quantize_int8(state: dict, *, names: set[str] | None = None, rest: torch.dtype | None = None) -> dict:
    """``state`` with each floating tensor of two or more dimensions (of ``names``, where given:
    e.g. the parameters, not the buffers) stored as int8 with per-output-channel scales (see
    ``INT8_SCALE``); other floating tensors in ``rest`` (default float16), the others as they are."""
    import torch

    rest = torch.float16 if rest is None else rest
    out = {}
    for k, v in state.items():
        if v.is_floating_point() and v.ndim >= 2 and (names is None or k in names):
            flat = v.detach().float().reshape(v.shape[0], -1)  # (out, in * kh * kw)
            scale = flat.abs().amax(dim=1).clamp_min(1e-30) / 127  # (out,); an all-zero row stays zero
            out[k] = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(v.shape)
            out[k + INT8_SCALE] = scale
        else:
            out[k] = v.to(rest) if v.is_floating_point() else v
    return out


def dequantize_int8(state: dict, *, source: str = "weights") -> tuple[dict, bool]:
    """(``state`` with every int8-stored tensor turned back into float32, whether it held any);
    a scale without its tensor, or of the wrong shape or type, is a corrupt file."""
    import torch

    scales = {k[: -len(INT8_SCALE)]: v for k, v in state.items() if k.endswith(INT8_SCALE)}
    out = {k: v for k, v in state.items() if not k.endswith(INT8_SCALE)}
    for k, s in scales.items():
        q = out.get(k)
        if q is None or q.dtype != torch.int8 or q.ndim < 2 or s.shape != (q.shape[0],) or not s.is_floating_point():
            raise ModelLoadError(f"corrupt weights file {source}: {k + INT8_SCALE} does not match an int8 tensor {k!r} of "
                                 f"{s.shape[0] if s.ndim == 1 else '?'} output channels")
        out[k] = q.float() * s.float().view(-1, *([1] * (q.ndim - 1)))
    unscaled = [k for k, v in out.items() if v.dtype == torch.int8]
    if unscaled:
        raise ModelLoadError(f"corrupt weights file {source}: int8 tensor {unscaled[0]!r} has no {INT8_SCALE} scale")
    return out, bool(scales)


def cached_tensor(kind: str, key: str, compute: Callable[[], Any], *, what: str) -> Any:
    """``compute()`` (a tensor), kept in ``cache_root()/kind/KEY.safetensors`` so the next call with
    the same ``key`` reads it instead. ``key`` (a hex digest) must name everything the tensor
    depends on: inputs, settings, library versions. A corrupt cache file is computed again; a cache
    that cannot be written costs only the time, with a warning naming the folder."""
    import warnings

    path = cache_root() / kind / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_safetensors(path)["tensor"]
        except (ModelLoadError, KeyError) as e:
            warnings.warn(f"ignoring the cached {what} ({e}); computing them again", stacklevel=2)
    out = compute()
    try:
        save_safetensors(path, {"tensor": out}, metadata={"what": what})
    except OSError as e:
        warnings.warn(f"could not keep the {what} in {path.parent} ({e}); the next run computes them again "
                      "(set WORDPAINT_CACHE to a writable folder)", stacklevel=2)
    return out


def load_state_dict_strict(module, state: dict, *, source: str) -> None:
    """Load ``state`` into ``module`` after checking every name and shape, so a mismatch is a
    one-line :class:`ModelLoadError` instead of torch's multi-line RuntimeError."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelLoadError(
            f"weights in {source} do not match the model config: "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ModelLoadError(
                f"weights in {source} do not match the model config: {k} has shape "
                f"{tuple(state[k].shape)}, the config expects {tuple(v.shape)}"
            )
    # a module built with empty=True (meta parameters) adopts the loaded tensors instead of copying into them
    assign = any(v.is_meta for v in own.values())
    module.load_state_dict({k: state[k].to(v.dtype) for k, v in own.items()}, assign=assign)
