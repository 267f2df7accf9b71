"""Reprint every number that docs/scale_aware.md and docs/authors_recipe.md quote about
lesion size: the measurements behind the scale-aware variant's constants, and the growth of
lesions under the authors' label resize on two input grids.

    python benchmarks/lesion_size_studies.py [--positions 64] > results/lesion_size_studies.md

The functions live in :mod:`afl_core.lesion_size_studies` (tested in
tests/test_lesion_size_studies.py); this script only prints their tables as markdown. The
committed output is ``results/lesion_size_studies.md``. About two minutes on one CPU core.
"""

from __future__ import annotations

import argparse

import torch

from afl_core import lesion_size_studies as studies

# The project's converted PI-CAI grid (data_download/picai.py: 20 x 256 x 256 at 3 x 0.5 x 0.5 mm,
# z, y, x) in NIfTI order, and a native-like T2W grid (a common PI-CAI acquisition).
INPUT_GRIDS = {
    "the project's PI-CAI grid, 256 x 256 x 20 at 0.5 x 0.5 x 3 mm": ((256, 256, 20), (0.5, 0.5, 3.0)),
    "a native-like T2W grid, 384 x 384 x 19 at 0.5 x 0.5 x 3 mm": ((384, 384, 19), (0.5, 0.5, 3.0)),
}


def section(title: str, table, floats: str = "{:.4g}") -> None:
    print(f"\n## {title}\n")
    print(_markdown(table, floats))


def _markdown(table, floats: str) -> str:
    header = ([""] if table.index.dtype != "int64" else []) + list(table.columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in table.iterrows():
        cells = [str(index)] if table.index.dtype != "int64" else []
        cells += [floats.format(v) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positions", type=int, default=64, help="lesion positions per volume for the resize growth")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("# Lesion size in the losses: the measurements\n")
    print("Printed by `python benchmarks/lesion_size_studies.py`; functions of `afl_core.lesion_size_studies`.")
    section(
        "Best fixed alpha on discs with calibrated posteriors sigmoid((R - |x|) / w), 0.5 mm grid",
        studies.alpha_study(),
    )
    section("Size term 2 log10(D / d) of balls for several reference diameters D", studies.size_term_table())
    section("The same lesion on other canvases and voxel sizes", studies.gamma_across_grids())
    section("Share of its cross-entropy a voxel keeps, (1 - p_t)^gamma", studies.focusing_table(), "{:.2e}")
    section(
        "A lesion-free sample next to a one-voxel lesion",
        studies.empty_versus_one_voxel(
            (
                (0.5, 0.5),
                (1.0, 1.0),
                (1.77, 1.77),
                (2.0, 2.0),
                (3.0, 3.0),
                (3.0, 0.5, 0.5),
                (1.0, 1.0, 1.0),
                (3.0, 3.0, 3.0),
            )
        ),
    )
    for name, (shape, spacing) in INPUT_GRIDS.items():
        table = studies.resize_growth(shape=shape, spacing=spacing, positions=args.positions)
        section(f"The authors' resize to 160 x 128 x 24 from {name} ({args.positions} positions)", table, "{:.3g}")


if __name__ == "__main__":
    main()
