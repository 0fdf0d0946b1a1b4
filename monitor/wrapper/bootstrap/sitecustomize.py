"""Python runs this at start-up in programs launched by ``bedrock-top run``.

It loads ``monitor/wrapper/auto.py`` by path (importing no ``monitor`` package yet) and installs
the hook that instruments bedrock-runtime clients, then runs the ``sitecustomize`` this one
shadows, if any. A failure here is reported on stderr and never stops the program.
"""

import importlib.util
import os
import sys


def _bedrock_top_install() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    auto_path = os.path.join(os.path.dirname(here), "auto.py")
    try:
        spec = importlib.util.spec_from_file_location("_bedrock_top_auto", auto_path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {auto_path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules["_bedrock_top_auto"] = module
        spec.loader.exec_module(module)
        module.install()
    except Exception as err:
        sys.stderr.write(f"bedrock-top: bedrock-runtime calls will not be recorded: {err}\n")


def _bedrock_top_chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ours = sys.modules.pop("sitecustomize", None)
    saved_path = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        if ours is not None:
            sys.modules["sitecustomize"] = ours
    finally:
        sys.path[:] = saved_path


_bedrock_top_install()
_bedrock_top_chain()
