"""Command lines built from settings by the parsers that will read them, so that what a
notebook prints is what ``afl-data folder``, ``afl-train`` and ``python -m afl_core.sweep``
accept (options spelt, ordered and repeated as each parser declares them)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from typing import Any, Mapping

__all__ = ["command_line", "folder_command", "train_command", "sweep_command"]


def _words(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [json.dumps(value)]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [os.fspath(value) if isinstance(value, os.PathLike) else str(value)]


def command_line(program: str, parser: argparse.ArgumentParser, values: Mapping[str, Any]) -> str:
    """``program`` followed by the arguments that make ``parser`` read ``values``.

    Args:
        program: the words that start the command, e.g. ``"afl-train"``.
        parser: the parser of that command.
        values: argument name (the parser's ``dest``, e.g. ``batch_size``) -> value;
            ``None`` leaves an argument out. Lists and tuples give several words (or a
            repeated option, for an ``append`` option), dicts give JSON, booleans the
            flag (``--x`` / ``--no-x``) that sets them.

    Returns:
        The command as one shell-quoted string, in the parser's order of arguments.

    Raises:
        ValueError: a name the parser does not have, or a boolean its flag cannot set.
    """
    actions = {action.dest: action for action in parser._actions if action.dest != "help"}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ValueError(f"{program} has no argument {unknown}; it takes {sorted(actions)}")
    words = shlex.split(program)
    for dest, action in actions.items():
        value = values.get(dest)
        if value is None:
            continue
        option = action.option_strings[0] if action.option_strings else None
        if option is None:
            words += _words(value)
        elif isinstance(action, argparse.BooleanOptionalAction):
            words.append(action.option_strings[0 if value else 1])
        elif action.nargs == 0:  # store_true / store_false / store_const
            if value == action.const:
                words.append(option)
            elif not isinstance(value, bool):  # a flag's other state is its absence
                raise ValueError(f"{option} sets {dest} to {action.const!r} or leaves it unset, not {value!r}")
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words += [option, *_words(item)]
        else:
            words += [option, *_words(value)]
    return shlex.join(words)


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return choices[name]


def folder_command(program: str = "afl-data folder", **values) -> str:
    """The ``afl-data folder`` command for :func:`data_download.folder.convert_folder`'s
    arguments (``source``, ``dest``, ``images``, ``label``, ``lesion_values``, ``patient``,
    ``force``, ``progress``)."""
    from data_download.cli import build_parser

    return command_line(program, _subcommand(build_parser(), "folder"), values)


def train_command(program: str = "afl-train", **values) -> str:
    """The ``afl-train`` command for :class:`afl_core.train.TrainConfig`'s fields that have
    an option (``data``, ``out``, ``loss``, ``epochs``, ...)."""
    from afl_core.train import build_parser

    return command_line(program, build_parser(), _without_default_flags(values))


def _without_default_flags(values: dict) -> dict:
    """``values`` less the on/off settings left at :class:`TrainConfig`'s default (no word needed)."""
    import dataclasses

    from afl_core.train import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in values.items() if not (isinstance(v, bool) and defaults.get(k) is v)}


def sweep_command(program: str = "python -m afl_core.sweep", **values) -> str:
    """The ``python -m afl_core.sweep`` command (``data``, ``losses``, ``seeds``, ``folds``,
    ``out`` and the training options shared by every run)."""
    from afl_core.sweep import build_parser

    return command_line(program, build_parser(), _without_default_flags(values))
