"""A probe the GPU check puts on the studio's PYTHONPATH: in every Python process of the studio
whose environment has ``FTSTUDIO_GPU_CHECK_PROBE_DIR``, it records (without changing anything)

- which attention kernel transformers dispatched to and the dtype the attention computed in
  (by wrapping ``ALL_ATTENTION_FUNCTIONS.get_interface`` when transformers.modeling_utils loads);
- the process's peak CUDA memory (``torch.cuda.max_memory_allocated`` / ``_reserved``) at exit;

into ``$FTSTUDIO_GPU_CHECK_PROBE_DIR/<pid>.json``. The training processes exit normally (also
on failure, through sys.exit), so the at-exit record is written for every run. Any other
sitecustomize on the path is still imported after this one.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.abc
import importlib.util
import json
import os
import sys

_PROBE_DIR = os.environ.get("FTSTUDIO_GPU_CHECK_PROBE_DIR")
_TARGET = "transformers.modeling_utils"
_attention: dict[str, list[str]] = {}


def _record_attention(impl: str, dtype: str) -> None:
    dtypes = _attention.setdefault(str(impl), [])
    if dtype not in dtypes:
        dtypes.append(dtype)


def _wrap(module) -> None:
    functions = getattr(module, "ALL_ATTENTION_FUNCTIONS", None)
    if functions is None:
        return
    original = functions.get_interface

    def get_interface(attn_implementation, default):
        chosen = original(attn_implementation, default)

        def attention(module_, query, *args, **kwargs):
            _record_attention(attn_implementation, str(getattr(query, "dtype", "?")))
            return chosen(module_, query, *args, **kwargs)

        return attention

    functions.get_interface = get_interface


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            try:
                _wrap(module)
            except Exception as exc:  # a probe never breaks the run
                print(f"[gpu_check probe] could not wrap attention: {exc}", file=sys.stderr)

        loader.exec_module = exec_and_wrap
        return spec


def _at_exit() -> None:
    record: dict = {"pid": os.getpid(), "argv": sys.argv, "attention": _attention}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                record["cuda_device"] = torch.cuda.get_device_name()
                record["max_memory_allocated"] = torch.cuda.max_memory_allocated()
                record["max_memory_reserved"] = torch.cuda.max_memory_reserved()
        except Exception as exc:
            record["cuda_error"] = repr(exc)
    if not _attention and "max_memory_allocated" not in record:
        return  # not a training process
    try:
        path = os.path.join(_PROBE_DIR, f"{os.getpid()}.json")
        with open(path, "w") as out:
            json.dump(record, out)
    except OSError:
        pass


def _chain_other_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    this = sys.modules.pop("sitecustomize", None)
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if this is not None:
            sys.modules["sitecustomize"] = this


if _PROBE_DIR:
    sys.meta_path.insert(0, _Hook())
    atexit.register(_at_exit)
_chain_other_sitecustomize()
