"""Reading what users hand the CLI and the model registry: state-dict files (``--weights``),
label files (``--labels``) and Python files or modules that build a model (``--model
path/to/file.py:FACTORY``, ``package.module:ATTR``), each failing with a one-line
:class:`CliError`.

``--weights FILE`` is read with ``torch.load(weights_only=True)`` (no code runs) and loaded
strictly; a file that does not fit names the missing and unexpected keys, and a pickle that would
need code (a whole pickled model) is refused saying so. A model file or module is imported, so
its code runs with the user's rights: by design, like ``python file.py``; only name files you
trust.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CliError",
    "apply_weights",
    "import_user_model",
    "load_labels",
    "load_state_dict_file",
    "user_code_error",
]



class CliError(Exception):
    """A problem with what the user asked for; ``str()`` is the one-line message."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- weights and labels


def _short_list(keys: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (``weights_only=True``: no code runs).

    A checkpoint dict holding the state dict under ``state_dict`` or ``model_state_dict``
    is unwrapped.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CliError(f"--weights {file}: no such file")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of any kind mean "not a state dict"
        raise CliError(f"--weights {file}: {_why_not_loaded(exc)}") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                obj = inner
                break
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CliError(
            f"--weights {file}: expected a state dict (parameter name -> tensor), got "
            f"{type(obj).__name__}; save it with torch.save(model.state_dict(), FILE)"
        )
    return obj


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _why_not_loaded(exc: BaseException) -> str:
    """One clean line on why ``torch.load(weights_only=True)`` refused a file: the global a
    pickle needs (a class or function: loading it could run code), or the error's gist."""
    text = " ".join(_ANSI_ESCAPE.sub("", str(exc)).split()) or type(exc).__name__
    needs = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if needs:
        return (
            f"refused: it is a pickle that needs {needs.group(1)}, and unpickling that could "
            "run arbitrary code, so camlens reads only state dicts (torch.load with "
            "weights_only=True); if it holds a whole model (torch.save(model)), load it where "
            "you trust it and save model.state_dict() instead"
        )
    gist = text.split("WeightsUnpickler error:", 1)[-1].strip()
    if len(gist) > 200:
        gist = gist[:200].rsplit(" ", 1)[0] + " ..."
    return (f"cannot read it as a state dict saved with torch.save (weights_only=True, which "
            f"never runs code from the file): {gist}")


def apply_weights(model: nn.Module, path: str | os.PathLike[str], name: str) -> None:
    """Load ``path`` into ``model`` with ``strict=True``, or raise a one-line CliError."""
    state = load_state_dict_file(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short_list(unexpected)}")
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = " (saved from DataParallel? strip the 'module.' prefix)"
        raise CliError(f"--weights {path} does not fit {name}: " + "; ".join(parts) + hint)
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CliError(
            f"--weights {path} does not fit {name}: {len(wrong)} tensor(s) of the wrong shape "
            f"(file vs model): {_short_list(wrong)}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CliError(f"--weights {path} does not fit {name}: {first}") from exc


def load_labels(path: str | os.PathLike[str]) -> list[str]:
    """One class name per line, in class-index order (trailing blank lines ignored)."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CliError(f"--labels {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--labels {file}: cannot read it as UTF-8 text ({exc})") from None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise CliError(f"--labels {file}: the file is empty; expected one class name per line")
    return labels


# --------------------------------------------------------------------------- specs


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """Let a model file import its sibling modules while it is loaded."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def user_code_error(what: str, exc: BaseException) -> CliError:
    msg = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__
    return CliError(f"{what} failed: {detail} (rerun with --debug for the traceback)")


def _get_attr(obj: Any, dotted: str, where: str) -> Any:
    for part in dotted.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            near = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise CliError(f"{where} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    return obj


def _instantiate(obj: Any, spec: str) -> nn.Module:
    """``obj`` itself if it is a module, else what calling it with no arguments returns."""
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise CliError(
            f"--model {spec}: {type(obj).__name__} is neither an nn.Module nor a callable "
            "returning one"
        )
    try:
        model = obj()
    except TypeError as exc:
        if "argument" in str(exc):
            raise CliError(
                f"--model {spec}: the factory must take no arguments ({exc})"
            ) from exc
        raise user_code_error(f"--model {spec}: calling the factory", exc) from exc
    except Exception as exc:  # noqa: BLE001 - the user's factory: report it in one line
        raise user_code_error(f"--model {spec}: calling the factory", exc) from exc
    if not isinstance(model, nn.Module):
        raise CliError(
            f"--model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _from_file(spec: str, file_part: str, attr: str) -> nn.Module:
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise CliError(f"--model {spec}: {path} is not a file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    mod_name = f"camlens_user_model_{path.stem}_{digest}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise CliError(f"--model {spec}: cannot import {path} as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = module
    with _on_sys_path(path.resolve().parent):
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file: report it in one line
            sys.modules.pop(mod_name, None)
            raise user_code_error(f"--model {spec}: importing {path}", exc) from exc
        return _instantiate(_get_attr(module, attr, str(path)), spec)


def _from_module(spec: str, module_name: str, attr: str) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(
                f"--model {spec}: no module named {exc.name!r}; install it or add its folder "
                "to PYTHONPATH (or give path/to/file.py:FACTORY)"
            ) from exc
        raise user_code_error(f"--model {spec}: importing {module_name}", exc) from exc
    except Exception as exc:  # noqa: BLE001 - the user's module: report it in one line
        raise user_code_error(f"--model {spec}: importing {module_name}", exc) from exc
    return _instantiate(_get_attr(module, attr, module_name), spec)


def import_user_model(spec: str, head: str, attr: str) -> nn.Module:
    """``head:attr`` from a Python file (``head`` ends in .py or holds a path separator) or an
    importable module; the code runs (by design, like ``python file.py``)."""
    if head.endswith(".py") or "/" in head or os.sep in head:
        return _from_file(spec, head, attr)
    return _from_module(spec, head, attr)
