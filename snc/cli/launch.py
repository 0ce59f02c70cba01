"""The Hydra entry points' front door: mistakes that Hydra catches before snc's own checks
(an unknown key, a group option that does not exist, an override it cannot parse, a list
without brackets) are said in snc's one-line format and exit 2, like every other input error.

    snc: error: unknown key 'cnn.prob'; did you mean cn.prob?
    snc: error: sn takes on|off|se; got 'true'

``verbose=true`` on the command line (or ``SNC_TRACEBACK=1``) shows the traceback instead.
Hydra's own hint (``+key=...``, which adds a key nobody reads) is never shown for a misspelling.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence

from snc.console import error_line

_OVERRIDE = re.compile(r"Could not override '([^']+)'|Error merging override ([^=\s]+)=")
_CONVERT = re.compile(r"Value '([^']*)' of type '\w+' could not be converted to (\w+)")
_AMBIGUOUS = re.compile(r"Ambiguous value for argument '([^']+)'")
_RESOLVER = re.compile(r"ConfigError raised while resolving interpolation: (.*)", re.S)
_PARSE = re.compile(r"Error parsing override '([^']*)'")
_MISSING_OPTION = re.compile(r"Could not find '([^']+)/([^'/]+)'")


def launch(main: Callable[[], Any], config_dir: Path, config_name: str,
           argv: Optional[Sequence[str]] = None) -> None:
    """Calls the ``@hydra.main`` function ``main``; Hydra's composition errors become one
    ``snc: error:`` line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Hydra raises its errors instead of printing them (and its '+key=' hint) itself
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sweeps = _sweep_root(argv)
    before = set(sweeps.iterdir()) if sweeps is not None and sweeps.is_dir() else set()
    try:
        main()
    except Exception as err:  # noqa: BLE001 - re-raised unless it is a Hydra-level mistake
        message = explain(err, argv, config_dir, config_name)
        if message is None or wants_traceback(argv):
            raise
        _remove_new_sweep_folders(sweeps, before)
        print(error_line(message), file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _sweep_root(argv: Sequence[str]) -> Optional[Path]:
    """Where a multirun puts its ``multirun.yaml`` folders (``hydra.sweep.dir`` of
    configs/train.yaml: ``<paths.output_dir>/multirun/<time>``), or None for a single run."""
    if not any(a in ("-m", "--multirun") for a in argv):
        return None
    root = os.environ.get("SNC_OUTPUT_DIR", "outputs")
    for word in argv:
        if word.lstrip("+").startswith("paths.output_dir="):
            root = word.split("=", 1)[1]
    return Path(root) / "multirun"


def _remove_new_sweep_folders(root: Optional[Path], before: set) -> None:
    """A sweep refused while composing its first job leaves no ``multirun/<time>`` folder
    holding only Hydra's ``multirun.yaml`` (nor the empty folders above it)."""
    if root is None or not root.is_dir():
        return
    for folder in set(root.iterdir()) - before:
        if folder.is_dir() and {p.name for p in folder.iterdir()} <= {"multirun.yaml"}:
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
    for empty in (root, root.parent):
        try:
            empty.rmdir()  # only when empty
        except OSError:
            break


def wants_traceback(argv: Iterable[str]) -> bool:
    return bool(os.environ.get("SNC_TRACEBACK")) or any(
        a.lstrip("+") in ("verbose=true", "verbose=True", "verbose=1") for a in argv)


def explain(err: BaseException, argv: Sequence[str], config_dir: Path,
            config_name: str) -> Optional[str]:
    """snc's message for a Hydra-level error, or None when ``err`` is not one."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        InterpolationResolutionError,
        MissingMandatoryValue,
        ValidationError,
    )

    text = str(err)
    groups = config_groups(config_dir)
    if isinstance(err, OverrideParseException) or _PARSE.search(text):
        match = _PARSE.search(text)
        what = f"the override {match.group(1)!r}" if match else "an override"
        return (f"cannot read {what}: write key=value (a list as key=[a,b], a value with "
                "spaces or commas in quotes)")
    if isinstance(err, MissingConfigException) or "Config group override must be" in text:
        bad = bad_group_choice(argv, config_dir, groups)
        if bad is not None:
            return bad
        match = _MISSING_OPTION.search(text)
        if match and match.group(1) in groups:
            return group_message(config_dir, match.group(1), match.group(2))
        return None
    if isinstance(err, ConfigCompositionException):
        match = _AMBIGUOUS.search(text)
        if match:
            key, _, value = match.group(1).partition("=")
            return (f"{match.group(1)}: a list is written in brackets, {key}=[{value}] "
                    f"(or add -m to run one job per value)")
        match = _OVERRIDE.search(text)
        if match:
            key = match.group(1) or match.group(2)
            cause = err.__cause__
            converted = _CONVERT.search(str(cause))
            if isinstance(cause, ValidationError) and converted:
                kind = converted.group(2).lower()
                return (f"{key} takes {'an' if kind[0] in 'aeiou' else 'a'} {kind}; got "
                        f"{converted.group(1)!r}")
            if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
                return unknown_key(key, config_dir, config_name)
            first = str(cause).strip().splitlines()[0] if cause else text.splitlines()[0]
            return f"{key}: {first}"
        return text.strip().splitlines()[0]
    if isinstance(err, MissingMandatoryValue):
        key = getattr(err, "full_key", None) or "a key"
        return f"{key} has no value: set {key}=... on the command line"
    if isinstance(err, InterpolationResolutionError):  # a sweep's resolver refused its input
        match = _RESOLVER.search(text)
        if match:
            return match.group(1).strip().splitlines()[0]
    return None


def config_groups(config_dir: Path) -> List[str]:
    """The config groups (folders of ``configs/``) a user chooses with ``group=option``."""
    internal = ("hydra", "dataset_backbone", "task_dataset")  # chosen by the others, not by hand
    return sorted(p.name for p in Path(config_dir).iterdir()
                  if p.is_dir() and p.name not in internal and any(p.glob("*.yaml")))


def group_options(config_dir: Path, group: str) -> List[str]:
    return sorted(p.stem for p in (Path(config_dir) / group).glob("*.yaml"))


def group_message(config_dir: Path, group: str, value: str) -> str:
    options = group_options(config_dir, group)
    listed = "|".join(options) if len(options) <= 8 else ", ".join(options)
    near = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    return (f"{group} takes {listed}; got {value!r}"
            + (f" (did you mean {group}={near[0]}?)" if near else ""))


def bad_group_choice(argv: Sequence[str], config_dir: Path, groups: Sequence[str]
                     ) -> Optional[str]:
    """The message for the first ``group=value`` override whose value is no option of the group
    (``sn=true``: YAML reads ``true`` as a boolean, not the option ``on``)."""
    for word in argv:
        key, sep, value = word.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in groups:
            continue
        options = group_options(config_dir, key)
        values = value.strip("[]").split(",") if value else [value]
        for v in values:
            v = v.strip().strip("'\"")
            if v and v not in options and not v.startswith(("glob(", "choice(", "range(")):
                return group_message(config_dir, key, v)
    return None


def unknown_key(key: str, config_dir: Path, config_name: str) -> str:
    """``unknown key 'run'; did you mean run_dir?`` with the nearest keys of the config, or
    the group option a key belongs to (``cn.prob`` needs ``cn=on``)."""
    head, _, rest = key.partition(".")
    if rest and head in config_groups(config_dir):
        owners = [o for o in group_options(config_dir, head)
                  if rest in _option_keys(config_dir, head, o)]
        if owners:
            return (f"{key} is an option of {' or '.join(f'{head}={o}' for o in owners)}: add "
                    f"{head}={owners[0]} to the command line")
    keys = config_keys(config_dir, config_name)
    depth = key.count(".")
    pool = [k for k in keys if k.count(".") == depth] or keys
    near = difflib.get_close_matches(key, pool, n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    return (f"unknown key {key!r}{hint} (python {_program(config_name)} --help lists the "
            "groups and keys)")


def _option_keys(config_dir: Path, group: str, option: str) -> List[str]:
    """The dotted keys one option file of a group sets (``cn/on.yaml``: prob, crop, ...)."""
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.to_container(OmegaConf.load(Path(config_dir) / group / f"{option}.yaml"))
    except Exception:  # noqa: BLE001 - suggestions are best effort
        return []
    keys: List[str] = []
    _walk(node, "", keys)
    return keys


def _walk(node: Any, prefix: str, keys: List[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "defaults":
                continue
            keys.append(f"{prefix}{k}")
            _walk(v, f"{prefix}{k}.", keys)


def _program(config_name: str) -> str:
    return "-m snc.evaluate" if config_name == "evaluate" else "train.py"


def config_keys(config_dir: Path, config_name: str) -> List[str]:
    """Every dotted key of the composed default config, and the group names."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = OmegaConf.to_container(compose(config_name=config_name), resolve=False)
    except Exception:  # noqa: BLE001 - suggestions are best effort
        return config_groups(config_dir)
    finally:
        GlobalHydra.instance().clear()
    keys: List[str] = list(config_groups(config_dir))
    _walk(cfg, "", keys)
    for group in config_groups(config_dir):  # keys of the options not chosen by default
        for option in group_options(config_dir, group):
            keys += [f"{group}.{k}" for k in _option_keys(config_dir, group, option)
                     if not k.startswith("_")]
    return sorted(set(keys))
