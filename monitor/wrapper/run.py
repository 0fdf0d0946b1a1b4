"""``bedrock-top run [OPTIONS] -- COMMAND [ARGS...]``: run a program with every bedrock-runtime
client it creates (boto3 or aiobotocore) instrumented, without changing its code.

The command replaces this process (``exec``), so its exit status, signals and terminal are its
own. Python programs pick the hook up through ``PYTHONPATH`` (see ``bootstrap/sitecustomize.py``);
so do the Python programs they start.
"""

from __future__ import annotations

import os
import shutil
import site
import sys
from collections.abc import Mapping
from pathlib import Path

from monitor.paths import LOG_ENV
from monitor.wrapper.auto import DEPS_PATH_ENV
from monitor.wrapper.estimate import TOKENIZER_ENV
from monitor.wrapper.hooks import APP_ENV, EMF_ENV, TAGS_ENV, _checked_tags, parse_tags
from monitor.wrapper.stdout import STDOUT_TARGET
from monitor.wrapper.writer import ROTATE_ENV, parse_max_bytes

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "bootstrap"

USAGE = """\
usage: bedrock-top run [--app NAME] [--log PATH] [--tag KEY=VALUE]... [--tokenizer SPEC]
                       [--max-log-bytes SIZE] [--emf] [--] COMMAND [ARGS...]

Run COMMAND with every bedrock-runtime client it creates recorded in the usage log.

  --app NAME           application name in the records (default: $BEDROCK_TOP_APP, else the
                       program's name)
  --log PATH           usage log to append to (default: $BEDROCK_TOP_LOG, else the file the
                       monitor tails); - writes the records to standard output
  --tag KEY=VALUE      tag every record (repeatable)
  --tokenizer SPEC     tokenizer.json, directory, or Hugging Face repo id in the local cache,
                       for estimates when a response has no token count
  --max-log-bytes SIZE rotate the log to <log>.1 past SIZE (e.g. 50M)
  --emf                add a CloudWatch Embedded Metric Format block to each record
                       (namespace BedrockTop; sets BEDROCK_TOP_EMF=1)
"""


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Options (as the environment variables they set) and the command."""
    env: dict[str, str] = {}
    tags: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            break
        if arg in ("-h", "--help"):
            raise UsageError("")
        if not arg.startswith("-"):
            args.insert(0, arg)
            break
        if arg == "--emf":
            env[EMF_ENV] = "1"
            continue
        name, has_value, value = arg.partition("=")
        if name not in ("--app", "--log", "--tag", "--tokenizer", "--max-log-bytes"):
            raise UsageError(f"unknown option {name}")
        if not has_value:
            if not args:
                raise UsageError(f"{name} needs a value")
            value = args.pop(0)
        if name == "--app":
            if not value or len(value) > 256:
                raise UsageError("--app needs a name of 1 to 256 characters")
            env[APP_ENV] = value
        elif name == "--log":
            env[LOG_ENV] = (
                STDOUT_TARGET
                if value == STDOUT_TARGET
                else os.path.abspath(os.path.expanduser(value))
            )
        elif name == "--tag":
            try:
                tags.update(parse_tags(value))
                _checked_tags(tags)
            except ValueError as err:
                raise UsageError(f"--tag {value!r}: {err}") from None
        elif name == "--tokenizer":
            env[TOKENIZER_ENV] = value
        else:
            try:
                parse_max_bytes(value)
            except ValueError:
                raise UsageError(
                    f"--max-log-bytes {value!r}: expected a size such as 50M"
                ) from None
            env[ROTATE_ENV] = value
    if tags:
        env[TAGS_ENV] = ",".join(f"{key}={value}" for key, value in tags.items())
    if not args:
        raise UsageError("no command given")
    return env, args


def child_environment(base: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: the hook directory first on PYTHONPATH, the settings, and
    where bedrock-top's own dependencies live (used only for what the program lacks)."""
    env = dict(base)
    env.update(settings)
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    bootstrap = str(BOOTSTRAP_DIR)
    env["PYTHONPATH"] = os.pathsep.join([bootstrap, *(p for p in existing if p != bootstrap)])
    deps = [*site.getsitepackages(), site.getusersitepackages()]
    env[DEPS_PATH_ENV] = os.pathsep.join(p for p in deps if os.path.isdir(p))
    return env


def configured_tokenizer() -> str | None:
    """The configuration file's ``tokenizer``, for estimates (a broken file is reported and
    ignored: the command still runs)."""
    from monitor.config import ConfigError, load_config

    try:
        return load_config(None).tokenizer
    except ConfigError as err:
        print(f"bedrock-top run: warning: {err}", file=sys.stderr)
        return None


def main(argv: list[str]) -> int:
    """Replace this process with the instrumented command; returns only if it cannot start."""
    try:
        settings, command = parse_args(argv)
    except UsageError as err:
        if str(err):
            print(f"bedrock-top run: {err}", file=sys.stderr)
            print(USAGE, file=sys.stderr, end="")
            return 2
        print(USAGE, end="")
        return 0
    if TOKENIZER_ENV not in settings and not os.environ.get(TOKENIZER_ENV):
        tokenizer = configured_tokenizer()
        if tokenizer:
            settings[TOKENIZER_ENV] = tokenizer
    env = child_environment(os.environ, settings)
    program = shutil.which(command[0], path=env.get("PATH")) if os.sep not in command[0] else None
    executable = program or command[0]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(executable, command, env)
    except FileNotFoundError:
        print(f"bedrock-top run: command not found: {command[0]}", file=sys.stderr)
        return 127
    except OSError as err:
        print(f"bedrock-top run: cannot run {command[0]}: {err.strerror}", file=sys.stderr)
        return 126
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
