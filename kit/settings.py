"""One way to read every stage's settings: small dataclasses, defaults < --config YAML < flags.

    @dataclass
    class InferSettings:
        model: str = opt(None, "base model (name or folder)", required=True)
        k: int = opt(20, "few-shot examples per task")

    settings, info = parse_settings(InferSettings, argv, prog="infer.py", doc=__doc__)

Each field is a flag `--name`, typed by its annotation, listed by `--help` with its help text and
default; `--config FILE.yaml` sets fields by name. An unknown flag or key is an error with a "did
you mean". Only the standard library and PyYAML are imported, so `--help` and mistakes in paths
and values answer at once; each dataclass's `check()` names every problem before a model loads.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from kit.io import KitError, did_you_mean, load_yaml

NUMBER = re.compile(r"-(\d|\.\d)[\d.eE+-]*")


def opt(default=None, help: str = "", choices=None, required: bool = False, config_only: bool = False,
        positional: bool = False, repeatable: bool = False):
    """A settings field: its default, help text, allowed values; `config_only` for mappings,
    `positional` for an argument given without its name (judge.py compare A B), `repeatable` for
    a list flag whose repeats add up (`--ban "#" --ban "##"`; otherwise the last one wins)."""
    metadata = {"help": help, "choices": choices, "required": required, "config_only": config_only,
                "positional": positional, "repeatable": repeatable}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ParseInfo:
    explicit: set  # field names set by the config file or a flag
    config_path: str | None
    extra_config: dict  # keys of the config file that none of the classes has (parse_known only)
    extra_argv: list  # flags none of the classes has (parse_known only)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: type  # str, int, float, bool, list or dict
    item: type  # element type of a list
    default: object
    help: str
    choices: tuple | None
    required: bool
    config_only: bool
    positional: bool
    repeatable: bool


def field_specs(cls) -> list[FieldSpec]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        kind, item = _kind(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        meta = f.metadata
        specs.append(FieldSpec(f.name, kind, item, default, meta.get("help", ""),
                               tuple(meta["choices"]) if meta.get("choices") else None,
                               bool(meta.get("required")), bool(meta.get("config_only")),
                               bool(meta.get("positional")), bool(meta.get("repeatable"))))
    return specs


def _kind(hint) -> tuple[type, type]:
    """(kind, item type) of an annotation such as `int | None` or `list[str]`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return list, (args[0] if args else str)
    if origin is dict or hint is dict:
        return dict, str
    if args and origin is not list:  # Optional[X] / X | None
        return _kind(args[0])
    return (hint if hint in (str, int, float, bool) else str), str


def to_bool(text) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise ValueError("must be true or false")


def _convert(spec: FieldSpec, value, where: str):
    """A config value as the field's type; a one-line error naming where it came from."""
    if value is None:
        return None
    try:
        if spec.kind is list:
            return [_scalar(spec.item, v) for v in (value if isinstance(value, list) else [value])]
        if spec.kind is dict:
            if not isinstance(value, dict):
                raise ValueError("must be a mapping of keys to values")
            return value
        return _scalar(spec.kind, value)
    except (TypeError, ValueError) as err:
        raise KitError(f"{where}: `{spec.name}` {err} (got {value!r})") from None


def _scalar(kind: type, value):
    if kind is bool:
        return to_bool(value)
    if isinstance(value, bool) and kind in (int, float) or isinstance(value, (dict, list)):
        raise ValueError("must be a single " + {int: "integer", float: "number"}.get(kind, "value"))
    if kind is int:
        if isinstance(value, int) or isinstance(value, float) and value.is_integer() or (
                isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value)):
            return int(value)
        raise ValueError("must be an integer")
    if kind is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError("must be a number") from None
    return str(value)


def _add_flag(group, spec: FieldSpec) -> None:
    default = "none" if spec.default in (None, [], {}) else spec.default
    note = "required" if spec.required else f"default: {default}"
    help_text = f"{spec.help}{' ' if spec.help else ''}({note})".replace("%", "%%")
    metavar = {int: "N", float: "X"}.get(spec.item if spec.kind is list else spec.kind, "VALUE")
    kwargs = dict(dest=spec.name, default=argparse.SUPPRESS, help=help_text)
    if not spec.choices and spec.kind is not bool:
        kwargs["metavar"] = metavar
    if spec.choices:
        kwargs["choices"] = spec.choices
    if spec.positional:
        kwargs.pop("dest")
        kwargs["metavar"] = spec.name.upper()
        group.add_argument(spec.name, type=spec.kind, nargs="?", **kwargs)
    elif spec.kind is bool:
        group.add_argument(f"--{spec.name}", nargs="?", const=True, type=to_bool, metavar="true|false",
                           **kwargs)
        if spec.default is True:
            group.add_argument(f"--no_{spec.name}", dest=spec.name, action="store_false",
                               default=argparse.SUPPRESS, help=f"set {spec.name} to false")
    elif spec.kind is list:
        group.add_argument(f"--{spec.name}", nargs="*", action="extend" if spec.repeatable else "store",
                           type=spec.item, **kwargs)
    else:
        group.add_argument(f"--{spec.name}", type=spec.kind, **kwargs)


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line (a KitError), not the usage of every option."""

    def error(self, message):
        if message.startswith("argument --config"):
            raise KitError("--config takes a YAML file (e.g. configs/tiny_cpu.yaml)")
        raise KitError(f"{message.removeprefix('argument ')} (python {self.prog} --help lists the options)")


def build_parser(classes, prog: str, doc: str, epilog: str = "") -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=doc, epilog=epilog, allow_abbrev=False,
                    usage=f"python {prog} [--config FILE.yaml] [--option value ...]",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", help="settings file: any option below by name; "
                        "flags override it")
    for cls in classes:
        title = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
        group = parser.add_argument_group(title)
        config_only = []
        for spec in field_specs(cls):
            if spec.config_only:
                config_only.append(spec.name)
            else:
                _add_flag(group, spec)
        if config_only:
            group.description = f"config file only: {', '.join(config_only)}"
    return parser


def attach_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """A value that starts with "-" is joined to its flag (`--ban ---` → `--ban=---`,
    `--learning_rate -1e-4` → `--learning_rate=-1e-4`): argparse would read it as an option."""
    takes_value = {s for a in parser._actions if a.nargs != 0 and a.option_strings for s in a.option_strings}
    known = {s for a in parser._actions for s in a.option_strings}
    out = []
    for token in argv:
        previous = out[-1] if out else ""
        flag_before = previous.startswith("--") and "=" not in previous
        if flag_before and token.startswith("-") and token not in known and (
                previous in takes_value or (previous not in known and NUMBER.fullmatch(token))):
            out[-1] = f"{previous}={token}"
        else:
            out.append(token)
    return out


def parse_settings(classes, argv=None, *, prog: str, doc: str, epilog: str = "",
                   default_config: str | None = None, also_known=(), known_only: bool = False,
                   check: bool = True):
    """(settings, ParseInfo): one instance per class (or the instance, for one class), each
    checked. `also_known`: classes whose keys a config file may carry for another reader (infer's
    file may hold the judge's keys). `known_only`: flags and keys of no class are handed back in
    ParseInfo instead of being errors (train.py passes them to SFTConfig). `check` False: parse
    only (the README test parses commands whose files exist only on a user's machine)."""
    single = not isinstance(classes, (tuple, list))
    classes = (classes,) if single else tuple(classes)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(classes, prog, doc, epilog)
    namespace, rest = parser.parse_known_args(attach_values(argv, parser))
    if rest and not known_only:
        _unknown_flags(rest, parser)
    config_path = namespace.config or default_config
    config = load_yaml(config_path) if config_path else {}
    specs = {spec.name: spec for cls in classes for spec in field_specs(cls)}
    elsewhere = {spec.name for cls in also_known for spec in field_specs(cls)}
    unknown = sorted(set(config) - set(specs) - elsewhere)
    if unknown and not known_only:
        raise KitError(f"{config_path}: unknown key(s): {did_you_mean(unknown, set(specs) | elsewhere)}")
    given = {k: v for k, v in vars(namespace).items() if k != "config"}
    instances = [_instance(cls, config, given, config_path, check) for cls in classes]
    info = ParseInfo(explicit=(set(config) | set(given)) & set(specs), config_path=config_path,
                     extra_config={k: config[k] for k in unknown}, extra_argv=rest)
    return (instances[0] if single else tuple(instances)), info


def _instance(cls, config: dict, given: dict, config_path, check: bool = True):
    values = {}
    for spec in field_specs(cls):
        if spec.name in given:
            values[spec.name] = given[spec.name]
        elif spec.name in config:
            values[spec.name] = _convert(spec, config[spec.name], config_path)
        if check and spec.required and values.get(spec.name, spec.default) in (None, ""):
            raise KitError(f"{spec.name.upper() if spec.positional else '--' + spec.name} is required")
        if spec.choices and spec.name in values and values[spec.name] not in spec.choices:
            raise KitError(f"{spec.name} must be one of {', '.join(map(str, spec.choices))} "
                           f"(got {values[spec.name]!r})")
    instance = cls(**values)
    if check and hasattr(instance, "check"):
        instance.check()
    return instance


def _unknown_flags(rest: list[str], parser: argparse.ArgumentParser) -> None:
    flags = [t.split("=")[0] for t in rest if t.startswith("-")]
    valid = {s for a in parser._actions for s in a.option_strings}
    if flags:
        raise KitError(f"unknown option(s): {did_you_mean(flags, valid)}")
    raise KitError(f"unexpected argument(s): {' '.join(rest)} (options are --name value)")


def settings_from_file(cls, path, also_known=()):
    """A settings dataclass from a YAML file alone (infer.py --judge CONFIG), checked."""
    settings, _ = parse_settings(cls, ["--config", str(path)], prog=str(path), doc="",
                                 also_known=also_known)
    return settings


def strip_options(argv: list[str], names, parser_classes, prog: str = "") -> list[str]:
    """argv without the options `names` and their values (the sweep's base command)."""
    parser = build_parser(parser_classes, prog, "")
    argv = attach_values(list(argv), parser)
    flags = {f"--{n}" for n in names}
    nargs = {s: a.nargs for a in parser._actions for s in a.option_strings}
    out, left = [], 0  # left: values still to skip (-1: every value up to the next flag)
    for token in argv:
        if token.split("=")[0] in flags:
            left = 0 if "=" in token else (-1 if nargs.get(token) in ("*", "+", "?") else 1)
            continue
        if left and not token.startswith("--"):
            left -= left > 0
            continue
        left = 0
        out.append(token)
    return out


def existing_file(path, flag: str) -> None:
    if path and not Path(path).expanduser().is_file():
        what = "a folder, not a file" if Path(path).expanduser().is_dir() else "no such file"
        raise KitError(f"{flag} {path}: {what}")


def range_problems(settings, rules) -> list[str]:
    """`--name must be at least LOW (got X)` for each (name, low) whose value is set and below."""
    return [f"--{name} must be at least {low} (got {getattr(settings, name)})"
            for name, low in rules if getattr(settings, name) is not None and getattr(settings, name) < low]
