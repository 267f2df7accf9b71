"""Figures and small interactive widgets for the tutorial notebooks.

Every function draws with matplotlib's object API onto axes it is given (or a new figure
it returns), so it runs headless with the ``Agg`` backend and is unit-tested that way.
Widget factories (:func:`slice_viewer`, :func:`adaptive_explorer`) wrap a pure drawing
function with :func:`ipywidgets.interactive`; the widget calls it once with the slider
defaults when displayed. With the environment variable ``AFL_STATIC_WIDGETS=1`` (set by
``tools/run_tutorial.py`` and the notebook tests) they draw that default view as a plain
figure and return ``None`` instead: headless executors (nbclient, used by papermill) can
hang intermittently on widget messages (jupyter/nbclient#312, nteract/papermill#723).

Arrays follow the project's conventions: a case image is ``(C, X, Y, Z)`` and its label
``(X, Y, Z)`` in NIfTI axis order, the third axis being the slice axis; a slice is shown
with ``X`` across and ``Y`` up (``origin="lower"``), as radiology viewers show RAS data.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

__all__ = [
    "show_slice",
    "render_case_slice",
    "slice_viewer",
    "plot_curves",
    "plot_distributions",
    "plot_adaptive_example",
    "lesion_window",
    "adaptive_example",
    "adaptive_explorer",
    "show_cases",
    "largest_lesion_slice",
    "plot_runs",
    "plot_seed_spread",
    "plot_comparisons",
    "plot_loss_shares",
    "plot_study_summary",
]

LABEL_COLOUR = "#00e5ff"  # ground truth outline (cyan)
PRED_COLOUR = "#ff3d00"  # prediction fill (orange-red)


STATIC_WIDGETS_ENV = "AFL_STATIC_WIDGETS"


def _interactive(draw: Callable[..., None], controls: Mapping[str, Any]):
    """``ipywidgets.interactive(draw, **controls)``, or, when widgets are static, one call
    of ``draw`` with the controls' values (the figure is shown inline) and ``None``."""
    if os.environ.get(STATIC_WIDGETS_ENV, "") == "1":
        draw(**{name: control.value for name, control in controls.items()})
        return None
    import ipywidgets as widgets

    return widgets.interactive(draw, **controls)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _new_axes(ax: Axes | None, figsize=(4, 4)) -> Axes:
    if ax is not None:
        return ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _window(image: np.ndarray) -> tuple[float, float]:
    """Display range from the 1st to 99th percentile: robust to MRI's bright outliers."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def show_slice(
    image: Any,
    label: Any | None = None,
    pred: Any | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Draw a 2D slice ``(X, Y)`` in grey, the ground truth as an outline and the
    prediction as a translucent fill.

    Returns the axes (a new figure's when ``ax`` is None).
    """
    image = _as_numpy(image).astype(np.float32)
    if image.ndim != 2:
        raise ValueError(f"show_slice needs a 2D slice (X, Y), got shape {image.shape}")
    ax = _new_axes(ax)
    lo, hi = _window(image)
    ax.imshow(image.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    for name, overlay in (("label", label), ("pred", pred)):
        if overlay is None:
            continue
        overlay = _as_numpy(overlay)
        if overlay.shape != image.shape:
            raise ValueError(f"{name} shape {overlay.shape} differs from the image's {image.shape}")
        overlay = overlay > 0.5
        if name == "pred":
            ax.imshow(
                np.ma.masked_where(~overlay.T, overlay.T),
                cmap=_single_colour(PRED_COLOUR),
                alpha=0.45,
                origin="lower",
                interpolation="nearest",
            )
        elif overlay.any():
            ax.contour(overlay.T.astype(float), levels=[0.5], colors=LABEL_COLOUR, linewidths=1.2, origin="lower")
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return ax


def _single_colour(colour: str):
    from matplotlib.colors import ListedColormap

    return ListedColormap([colour])


def largest_lesion_slice(label: Any) -> int:
    """Index along the third axis of the slice with the most lesion voxels (the middle
    slice when the volume has no lesion)."""
    label = _as_numpy(label)
    if label.ndim != 3:
        raise ValueError(f"label must be a volume (X, Y, Z), got shape {label.shape}")
    per_slice = (label > 0).sum(axis=(0, 1))
    return int(per_slice.argmax()) if per_slice.any() else label.shape[2] // 2


def render_case_slice(
    image: Any,
    label: Any,
    slice_index: int,
    channel: int | str = "all",
    show_label: bool = True,
    *,
    channel_names: Sequence[str] | None = None,
) -> Figure:
    """One slice of a case: a single channel, or every channel side by side (``"all"``).

    ``image`` is ``(C, X, Y, Z)``, ``label`` ``(X, Y, Z)``.
    """
    image, label = _as_numpy(image), _as_numpy(label)
    if image.ndim != 4 or label.shape != image.shape[1:]:
        raise ValueError(
            f"expected image (C, X, Y, Z) and label (X, Y, Z) on the same grid, got {image.shape} and {label.shape}"
        )
    if not 0 <= slice_index < image.shape[3]:
        raise IndexError(f"slice_index {slice_index} outside 0..{image.shape[3] - 1}")
    names = list(channel_names) if channel_names else [f"channel {c}" for c in range(image.shape[0])]
    channels = range(image.shape[0]) if channel == "all" else [int(channel)]
    fig, axes = plt.subplots(1, len(channels), figsize=(3.2 * len(channels), 3.4), layout="constrained", squeeze=False)
    lesion = label[:, :, slice_index]
    for ax, c in zip(axes[0], channels):
        show_slice(
            image[c, :, :, slice_index],
            lesion if show_label else None,
            ax=ax,
            title=f"{names[c]} | slice {slice_index} | lesion {int((lesion > 0).sum())} px",
        )
    return fig


def slice_viewer(image: Any, label: Any, *, channel_names: Sequence[str] | None = None):
    """An ipywidgets slice browser (slice slider, channel menu, lesion-outline toggle).

    Opens on the slice with the largest lesion area. Returns the ``interactive`` widget;
    display it (or leave it last in a cell). Static mode (``AFL_STATIC_WIDGETS=1``): draws
    the opening view and returns ``None``.
    """
    import ipywidgets as widgets

    image, label = _as_numpy(image), _as_numpy(label)
    names = list(channel_names) if channel_names else [f"channel {c}" for c in range(image.shape[0])]
    options = [("all channels", "all")] + [(n, i) for i, n in enumerate(names)]

    def draw(slice_index: int, channel, show_label: bool) -> None:
        fig = render_case_slice(image, label, slice_index, channel, show_label, channel_names=names)
        plt.show()
        plt.close(fig)

    return _interactive(
        draw,
        {
            "slice_index": widgets.IntSlider(
                value=largest_lesion_slice(label),
                min=0,
                max=image.shape[3] - 1,
                description="slice",
                continuous_update=False,
            ),
            "channel": widgets.Dropdown(options=options, value="all", description="channel"),
            "show_label": widgets.Checkbox(value=True, description="lesion outline"),
        },
    )


def plot_curves(
    x: Any,
    curves: Mapping[str, Any],
    *,
    ax: Axes | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str | None = None,
    logy: bool = False,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Axes:
    """Several named curves over one x axis (e.g. the loss for gamma = 0, 1, 2, 5)."""
    ax = _new_axes(ax, figsize=(4.5, 3.4))
    x = _as_numpy(x)
    for name, y in curves.items():
        y = _as_numpy(y)
        if y.shape != x.shape:
            raise ValueError(f"curve {name!r} has shape {y.shape}, x has {x.shape}")
        ax.plot(x, y, label=name, **(styles or {}).get(name, {}))
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_distributions(
    values: Mapping[str, Any],
    *,
    log: Sequence[str] = (),
    bins: int = 20,
    reference: Mapping[str, Mapping[str, Any]] | None = None,
) -> Figure:
    """One histogram panel per named sample (lesion volume, irregularity, ...).

    Names listed in ``log`` get logarithmic bins. ``reference`` optionally overlays a
    second sample per panel, e.g. ``{"volume": {"real lesions": [...]}}``, drawn as
    vertical lines.
    """
    fig, axes = plt.subplots(1, len(values), figsize=(3.6 * len(values), 3.0), layout="constrained", squeeze=False)
    for ax, (name, sample) in zip(axes[0], values.items()):
        sample = _as_numpy(sample).astype(float).ravel()
        sample = sample[np.isfinite(sample)]
        if name in log:
            positive = sample[sample > 0]
            edges = np.geomspace(positive.min(), positive.max() * 1.0001, bins + 1) if positive.size else bins
            ax.set_xscale("log")
            sample = positive
        else:
            edges = bins
        ax.hist(sample, bins=edges, color="#4c72b0", alpha=0.85)
        for ref_name, ref_values in (reference or {}).get(name, {}).items():
            for i, v in enumerate(np.atleast_1d(_as_numpy(ref_values))):
                ax.axvline(float(v), color="#c44e52", ls="--", label=ref_name if i == 0 else None)
            ax.legend(fontsize=8)
        if name in log:
            # Within two decades (reference lines included) label 1, 2 and 5 of each decade,
            # else only one tick or none shows; over wider ranges the powers of ten only.
            low, high = ax.get_xlim()
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if np.log10(high / low) < 2 else (1.0,)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels would collide
        ax.set(xlabel=name, ylabel="count")
        ax.set_title(f"{name} (n={sample.size})", fontsize=9)
    return fig


def lesion_window(
    mask: Any, *, margin: float = 1.0, min_half: int = 6
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Display limits ``((x0, x1), (y0, y1))`` of a square window around a 2D mask's lesion.

    The window is centred on the lesion's bounding box and extends ``margin`` times the
    box's half-size beyond it (at least ``min_half`` voxels from the centre), clipped to
    the image; limits are voxel edges (``index +- 0.5``), as ``imshow`` draws them. A mask
    without lesion gives the whole image.
    """
    mask = _as_numpy(mask) > 0
    if mask.ndim != 2:
        raise ValueError(f"lesion_window needs a 2D mask, got shape {mask.shape}")
    if not mask.any():
        return (-0.5, mask.shape[0] - 0.5), (-0.5, mask.shape[1] - 0.5)
    lo = np.array([np.flatnonzero(mask.any(axis=1 - a)).min() for a in (0, 1)], dtype=float)
    hi = np.array([np.flatnonzero(mask.any(axis=1 - a)).max() for a in (0, 1)], dtype=float)
    centre = (lo + hi) / 2
    half = max(((hi - lo).max() / 2 + 0.5) * (1 + margin), float(min_half))  # square: the longer side rules
    limits = [(max(c - half, -0.5), min(c + half, n - 0.5)) for c, n in zip(centre, mask.shape)]
    return limits[0], limits[1]


def plot_adaptive_example(
    mask: Any,
    weight: Any,
    *,
    gamma: float,
    alpha: float,
    title: str = "",
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """A lesion outline beside its per-pixel loss weight map, both zoomed on the lesion
    (:func:`lesion_window`); the left title gives the whole image's size.

    ``weight`` is the A-FL loss divided by the plain cross-entropy at each pixel for a
    fixed imperfect prediction: below 1 where the loss is down-weighted.
    """
    mask, weight = _as_numpy(mask), _as_numpy(weight)
    if mask.ndim != 2 or weight.shape != mask.shape:
        raise ValueError(f"mask and weight must be 2D with the same shape, got {mask.shape} and {weight.shape}")
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.3), layout="constrained")
    fig = axes[0].figure
    image_size = " x ".join(str(n) for n in mask.shape)
    show_slice(
        mask.astype(float),
        mask,
        ax=axes[0],
        title=f"{title}\ngamma={gamma:.4f}  alpha={alpha:.4f}\n(zoomed; image {image_size} voxels)",
    )
    im = axes[1].imshow(weight.T, origin="lower", cmap="magma", interpolation="nearest")
    axes[1].contour(mask.T.astype(float), levels=[0.5], colors=LABEL_COLOUR, linewidths=0.8, origin="lower")
    axes[1].set_title("loss weight vs cross-entropy", fontsize=9)
    axes[1].set_axis_off()
    xlim, ylim = lesion_window(mask)
    for ax in axes[:2]:
        ax.set(xlim=xlim, ylim=ylim)  # imshow is transposed: array axis 0 across, axis 1 up
    bar = fig.colorbar(im, ax=axes[1], shrink=0.8)
    bar.set_label("A-FL / cross-entropy per voxel\n" + r"$\alpha_t\,(1-p_t)^\gamma$", fontsize=8)
    return fig


def adaptive_example(
    radius: float = 8.0,
    irregularity: float = 0.0,
    variant: str = "paper",
    *,
    size: int = 128,
    seed: int = 0,
) -> dict[str, Any]:
    """One synthetic lesion and what A-FL makes of it (the data behind the explorer).

    The lesion is :func:`afl_core.synthetic.lesion_mask_2d` on a ``size x size`` image.
    The "prediction" is a plausible imperfect one: the mask blurred (sigma 2 voxels)
    and squeezed into probabilities 0.1 to 0.9. ``weight`` is the A-FL loss of each
    voxel divided by its plain cross-entropy, i.e. ``alpha_t (1 - p_t) ** gamma``.

    Returns ``mask`` (uint8 2D), ``prob``, ``weight``, ``alpha``, ``gamma`` (floats),
    ``foreground_fraction`` and ``irregularity_ratio`` (boundary irregularity).
    """
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    from afl_core.losses import adaptive_focal_loss, adaptive_parameters
    from afl_core.shape import boundary_irregularity, foreground_fraction
    from afl_core.synthetic import lesion_mask_2d

    mask = lesion_mask_2d((size, size), radius=radius, irregularity=irregularity, seed=seed)
    prob = 0.1 + 0.8 * ndimage.gaussian_filter(mask.astype(np.float64), sigma=2.0)
    target = torch.from_numpy(mask).float()[None, None]
    logits = torch.logit(torch.from_numpy(prob)).float()[None, None]
    alpha, gamma = adaptive_parameters(target, variant=variant)
    afl = adaptive_focal_loss(logits, target, variant=variant, reduction="none")
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return {
        "mask": mask,
        "prob": prob.astype(np.float32),
        "weight": (afl / ce)[0, 0].numpy(),
        "alpha": float(alpha[0]),
        "gamma": float(gamma[0]),
        "foreground_fraction": float(foreground_fraction(target)[0]),
        "irregularity_ratio": float(boundary_irregularity(target)[0]),
    }


def adaptive_explorer(
    example: Callable[..., Mapping[str, Any]],
    *,
    radius: tuple[float, float, float] = (2.0, 30.0, 1.0),
    irregularity: tuple[float, float, float] = (0.0, 0.6, 0.05),
    variants: Sequence[str] = ("paper", "scale_aware"),
    defaults: Mapping[str, Any] | None = None,
):
    """Sliders for lesion radius and outline irregularity, and a loss-variant menu.

    ``example(radius=, irregularity=, variant=)`` returns a mapping with ``mask``,
    ``weight``, ``gamma`` and ``alpha``, as :func:`adaptive_example` does; this widget
    only draws it. Static mode (``AFL_STATIC_WIDGETS=1``): draws the default view and
    returns ``None``.
    """
    import ipywidgets as widgets

    defaults = dict(defaults or {})

    def draw(radius: float, irregularity: float, variant: str) -> None:
        out = example(radius=radius, irregularity=irregularity, variant=variant)
        fig = plot_adaptive_example(
            out["mask"],
            out["weight"],
            gamma=float(out["gamma"]),
            alpha=float(out["alpha"]),
            title=f"{variant}: radius {radius:g}, irregularity {irregularity:g}",
        )
        plt.show()
        plt.close(fig)

    lo, hi, step = radius
    ilo, ihi, istep = irregularity
    return _interactive(
        draw,
        {
            "radius": widgets.FloatSlider(
                value=defaults.get("radius", (lo + hi) / 4), min=lo, max=hi, step=step, continuous_update=False
            ),
            "irregularity": widgets.FloatSlider(
                value=defaults.get("irregularity", ilo), min=ilo, max=ihi, step=istep, continuous_update=False
            ),
            "variant": widgets.Dropdown(options=list(variants), value=defaults.get("variant", variants[0])),
        },
    )


def show_cases(cases: Sequence[Mapping[str, Any]], *, ncols: int = 4, size: float = 2.8) -> Figure:
    """A grid of slices with outline (truth) and fill (prediction).

    Each item has ``image`` (2D), ``label`` (2D), optionally ``pred`` (2D) and ``title``.
    """
    if not cases:
        raise ValueError("show_cases needs at least one case")
    ncols = min(ncols, len(cases))
    nrows = -(-len(cases) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), layout="constrained", squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, case in zip(axes.flat, cases):
        show_slice(case["image"], case.get("label"), case.get("pred"), ax=ax, title=case.get("title"))
    return fig


# --------------------------------------------------------------------------- studies


def plot_runs(
    history: pd.DataFrame, metrics: Sequence[str] = ("train_loss", "val_dice"), labels: Mapping[str, str] | None = None
) -> plt.Figure:
    """Training curves of arms x seeds: one panel per metric, a thin line per seed and a
    thick one for the mean over seeds, one colour per arm. ``labels`` name the y axes."""
    labels = {
        "train_loss": "training loss (mean over the epoch's batches)",
        "val_loss": "validation loss (mean over slices)",
        "val_dice": "validation Dice (mean over cases)",
    } | dict(labels or {})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), layout="constrained", squeeze=False)
    arms = list(dict.fromkeys(history["arm"]))
    colours = plt.get_cmap("tab10")
    for ax, metric in zip(axes[0], metrics):
        for i, arm in enumerate(arms):
            runs = history[history["arm"] == arm]
            for _, run in runs.groupby("seed"):
                ax.plot(run["epoch"], run[metric], color=colours(i % 10), lw=0.7, alpha=0.5)
            mean = runs.groupby("epoch")[metric].mean()
            ax.plot(
                mean.index,
                mean.to_numpy(),
                color=colours(i % 10),
                lw=2,
                label=f"{arm} (mean of {runs['seed'].nunique()} seeds)",
            )
        ax.set(xlabel="epoch", ylabel=labels.get(metric, metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return fig


def plot_seed_spread(table: pd.DataFrame, *, ax: Axes | None = None, ylabel: str = "Dice (mean over cases)") -> Axes:
    """Each seed's value per arm (dots) and the mean over seeds with +/- one standard
    deviation (bar with error bar), from :func:`afl_core.statistics.seed_summary`."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    seeds = [c for c in table if str(c).startswith("seed ")]
    x = np.arange(len(table))
    ax.bar(x, table["mean"], color="0.85", yerr=table["sd"], capsize=3, label="mean over seeds +/- 1 sd")
    for column in seeds:
        ax.plot(x, table[column], "o", ms=3.5, color="tab:blue", alpha=0.75)
    ax.plot([], [], "o", ms=3.5, color="tab:blue", label="one seed")
    ax.set_xticks(x, table.index, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def plot_comparisons(table: pd.DataFrame, *, ax: Axes | None = None, xlabel: str = "difference in Dice") -> Axes:
    """Forest plot of :func:`afl_core.statistics.compare_to_reference`: each arm's mean
    difference from the reference with its interval; filled markers where the adjusted
    p-value (``p_adjusted``) is below 0.05."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.35 * len(table) + 1.2), layout="constrained")
    y = np.arange(len(table))[::-1]
    ax.errorbar(
        table["mean_diff"],
        y,
        xerr=[table["mean_diff"] - table["low"], table["high"] - table["mean_diff"]],
        fmt="none",
        ecolor="tab:blue",
        capsize=3,
    )
    significant = table["p_adjusted"].to_numpy() < 0.05
    ax.plot(table["mean_diff"][significant], y[significant], "o", color="tab:blue", label="adjusted p < 0.05")
    ax.plot(
        table["mean_diff"][~significant],
        y[~significant],
        "o",
        mfc="white",
        color="tab:blue",
        label="adjusted p >= 0.05",
    )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, table.index, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def plot_loss_shares(
    table: pd.DataFrame, parts: Sequence[str], *, ax: Axes | None = None, xlabel: str = "share of the loss"
) -> Axes:
    """One stacked horizontal bar per row of ``table``: the shares of ``parts`` (columns
    summing to 1 per row, e.g. :data:`afl_core.analysis.SHARE_PARTS`) from left to right,
    labelled by the row's index (the levels of a MultiIndex joined by ", "), first row on top."""
    missing = [part for part in parts if part not in table]
    if missing:
        raise KeyError(f"the table lacks the columns {missing} (columns: {list(table.columns)})")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.8 + 0.28 * len(table)), layout="constrained")
    y = np.arange(len(table))[::-1]
    left = np.zeros(len(table))
    for part in parts:
        widths = table[part].to_numpy(dtype=float)
        ax.barh(y, widths, left=left, height=0.7, label=part)
        left += widths
    labels = [", ".join(map(str, key)) if isinstance(key, tuple) else str(key) for key in table.index]
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, ncols=len(parts), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return ax


def plot_study_summary(table: pd.DataFrame, history: pd.DataFrame, *, title: str) -> Figure:
    """Left: each seed's mean Dice per arm over all cases (dots), their mean (bar) and the mean over
    the cases with a lesion only (dash); right: validation Dice per epoch."""
    arms = list(dict.fromkeys(table["arm"]))
    seed_means = table.groupby(["arm", "seed"])["dice"].mean().unstack("seed").loc[arms]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    left.bar(range(len(arms)), seed_means.mean(axis=1), color="0.85", label="mean over seeds")
    for column in seed_means:
        left.plot(range(len(arms)), seed_means[column], "o", ms=3, color="tab:blue", alpha=0.7)
    left.plot([], [], "o", ms=3, color="tab:blue", label="one seed (mean over all cases)")
    # Lesion-free cases score 1 when nothing is predicted: the all-case mean mixes them in.
    lesion = table["target_voxels"] > 0
    free = table.loc[~lesion]
    n_cases, n_free = table["case"].nunique(), free["case"].nunique()
    lesion_means = table[lesion].groupby("arm")["dice"].mean().loc[arms]
    left.plot(
        range(len(arms)),
        lesion_means,
        "_",
        ms=12,
        mew=2,
        color="k",
        label=f"mean over the {n_cases - n_free} lesion cases",
    )
    left.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
    scored = ", scored 1 by every run" if (free["dice"] == 1).all() else ""
    left.set_ylabel(f"Dice (last epoch), mean over\n{n_cases} cases ({n_free} lesion-free{scored})", fontsize=8)
    left.legend(fontsize=7, loc="lower left")  # over the bars, not the dots
    curve = history.groupby(["arm", "epoch"])["val_dice"].mean().unstack("arm")
    for arm in arms:
        right.plot(curve.index, curve[arm], label=arm, lw=1)
    right.set_xlabel("epoch")
    right.set_ylabel("validation Dice during training\n(mean over seeds)", fontsize=8)
    right.legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=9)
    return fig
