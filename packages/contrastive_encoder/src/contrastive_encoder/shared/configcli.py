"""Command lines generated from config dataclasses, so a training run's Python API and its CLI cannot have
different defaults: the default of every option is the dataclass field's, written once.

A field becomes an option when its metadata has a help text (``option(...)`` builds that metadata)::

    max_steps: int = field(default=1800, metadata=option("optimizer steps", type=positive_int))

- the flag is ``--max-steps`` (the field name, underscores -> dashes) unless ``flag=`` names another
  (``--source`` for a field ``sources``, its value then shown as ``SOURCE``); ``dest`` is always the field name;
- ``type`` (an argparse type: the validators of ``shared/argtypes.py``), ``choices``, ``metavar``, ``nargs`` and
  ``const`` (the value of a bare ``nargs="?"`` flag) come from the metadata; without ``type`` an ``int`` /
  ``float`` field parses as one;
- the default is the field's (metadata may not hold one); ``--help`` shows it unless the help text says
  ``(default ...)`` itself; a field without a default is a required option;
- a ``bool`` field is a pair ``--x / --no-x`` (``argparse.BooleanOptionalAction``; a ``bool | None`` field stays
  None unless given), or, when ``flag=`` is a ``--no-...`` flag, that single flag sets it to False;
- a ``list`` field is a repeatable flag whose values replace the default (``--data a --data b``), or one flag
  followed by several values with ``nargs="+"``;
- a field without help is Python-only (e.g. a dict of model overrides).

``add_config_arguments(parser, cls)`` adds a dataclass's options to a parser, ``config_from_args(cls, namespace)``
builds the config from what it parsed.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["add_config_arguments", "config_from_args", "option"]

_KEYS = {"help", "flag", "type", "choices", "metavar", "nargs", "const"}


def option(help: str, *, flag: str | None = None, type: Callable[[str], Any] | None = None,
           choices: Sequence[str] | None = None, metavar: str | None = None, nargs: str | None = None,
           const: Any = None) -> dict:
    """The ``field(metadata=...)`` of a config field that is also a command-line option."""
    given = {"flag": flag, "type": type, "choices": choices, "metavar": metavar, "nargs": nargs, "const": const}
    return {"help": help, **{k: v for k, v in given.items() if v is not None}}


class _Repeat(argparse.Action):
    """``append`` whose first use replaces the default instead of extending it."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest)
        setattr(namespace, self.dest, [*([] if current is self.default else current), values])


def _options(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help")]


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _unwrap(hint: Any) -> tuple[Any, Any]:
    """(outer type, element type) of a field's annotation with ``None`` dropped: ``list[str] | None`` ->
    (list, str), ``int | None`` -> (int, None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else str
    origin = typing.get_origin(hint)
    if origin is list:
        return list, (typing.get_args(hint) or (str,))[0]
    return hint, None


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add one option per documented field of the dataclass ``cls`` (rules in the module docstring)."""
    hints = typing.get_type_hints(cls)
    for f in _options(cls):
        meta = dict(f.metadata)
        if unknown := set(meta) - _KEYS:
            raise TypeError(f"{cls.__name__}.{f.name}: metadata keys {sorted(unknown)} (allowed: {sorted(_KEYS)}; "
                            "the default is the field's own)")
        outer, element = _unwrap(hints[f.name])
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        kw: dict[str, Any] = {"dest": f.name, "default": _default(f), **meta}
        if kw["default"] is dataclasses.MISSING:  # e.g. the model to evaluate: nothing to default to
            if outer is bool:
                raise TypeError(f"{cls.__name__}.{f.name}: a bool option needs a default")
            del kw["default"]
            kw["required"] = True
        if outer is bool and flag.startswith("--no-"):
            if kw["default"] is not True:
                raise TypeError(f"{cls.__name__}.{f.name}: a single {flag} flag needs the default True")
            kw["action"] = "store_false"
        elif outer is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.setdefault("type", element if outer is list else (outer if outer in (int, float) else None))
            if outer is list and "nargs" not in kw:
                kw["action"] = _Repeat
            if "flag" in f.metadata and "choices" not in kw:  # argparse would name the value after dest
                kw.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
            if kw.get("default") is not None and "(default" not in kw["help"]:
                kw["help"] += " (default: %(default)s)"
        parser.add_argument(flag, **kw)


def config_from_args(cls, namespace: argparse.Namespace):
    """The ``cls`` instance of what the parser read: every option's value, and the defaults of Python-only
    fields."""
    return cls(**{f.name: getattr(namespace, f.name) for f in _options(cls)})
