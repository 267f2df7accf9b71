"""afl_core.commands: every built command is read back by the parser it was built for."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from afl_core import sweep, train
from afl_core.commands import command_line, folder_command, sweep_command, train_command
from data_download.cli import build_parser


def _read_back(parser: argparse.ArgumentParser, command: str, program_words: int) -> dict:
    return vars(parser.parse_args(shlex.split(command)[program_words:]))


def test_folder_command_is_what_afl_data_reads(tmp_path):
    src, dest = tmp_path / "my scans", tmp_path / "data"
    values = dict(
        source=src,
        dest=dest,
        images=["{case}_t2.nii.gz", "{case}_adc.nii.gz"],
        label="{case}_seg.nii.gz",
        lesion_values=[1, 2],
        patient="{patient}_{visit}",
    )
    command = folder_command(**values)
    assert command.startswith("afl-data folder ") and command.count("--image ") == 2
    parsed = vars(build_parser().parse_args(shlex.split(command)[1:]))
    assert parsed["command"] == "folder"
    for name, value in values.items():
        assert parsed[name] == value, name
    assert parsed["force"] is False and parsed["progress"] is True  # defaults left alone


def test_train_command_round_trips_through_the_train_parser():
    values = dict(
        data="data/mine",
        out="runs/afl-seed0",
        loss="afl",
        variant="scale_aware",
        loss_options={"gamma_terms": ["volume"]},
        encoder="tu-resnet10t",
        encoder_weights="none",
        epochs=8,
        batch_size=8,
        optimizer="adam",
        size=(64, 64),
        augment=False,
        oversample_lesions=0.5,
        val_fraction=0.5,
        seed=3,
        device="cpu",
        amp=True,
        progress=False,
    )
    command = train_command(**values)
    assert "--no-augment" in command and "--oversample 0.5" in command and "--no-progress" in command
    parsed = _read_back(train.build_parser(), command, 1)
    for name, value in values.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert parsed[name] == expected, name


def test_sweep_command_round_trips_and_keeps_the_program_words():
    values = dict(data=Path("data/mine"), losses=["focal", "afl"], seeds=[0, 1, 2], folds=5, out="sweep", epochs=30)
    command = sweep_command(**values)
    assert command.startswith("python -m afl_core.sweep --out sweep ")  # the parser's order
    parsed = _read_back(sweep.build_parser(), command, 3)
    assert parsed["data"] == "data/mine" and parsed["losses"] == ["focal", "afl"] and parsed["seeds"] == [0, 1, 2]
    assert parsed["folds"] == 5 and parsed["epochs"] == 30


def test_paths_with_spaces_are_quoted():
    command = train_command(data="my data/set", out="runs/x")
    assert "'my data/set'" in command
    assert _read_back(train.build_parser(), command, 1)["data"] == "my data/set"
    assert "progress" not in train_command(data="d", out="o", progress=True)  # on unless --no-progress


def test_unknown_names_and_unsettable_flags_are_named():
    with pytest.raises(ValueError, match="no argument .*'epoch'"):
        train_command(data="d", out="o", epoch=3)
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiet", action="store_true")
    assert command_line("prog", parser, {"quiet": True}) == "prog --quiet"
    assert command_line("prog", parser, {"quiet": False}) == "prog"
    with pytest.raises(ValueError, match="--quiet"):
        command_line("prog", parser, {"quiet": "yes"})
