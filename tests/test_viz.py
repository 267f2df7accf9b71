"""Headless checks of afl_core.viz: what each figure draws, not only that it runs."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from afl_core import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _case(channels=2, shape=(12, 10, 5)):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(channels, *shape)).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[3:6, 4:7, 1] = 1  # 9 voxels on slice 1
    label[2:8, 2:8, 3] = 1  # 36 voxels on slice 3: the largest
    return image, label


def _renders(fig) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_slice_draws_transposed_image_outline_and_prediction():
    image = np.arange(12 * 10, dtype=np.float32).reshape(12, 10)
    label = np.zeros((12, 10))
    label[3:7, 2:5] = 1
    pred = np.zeros((12, 10))
    pred[4:9, 2:6] = 0.9
    ax = viz.show_slice(image, label, pred, title="t")
    base, fill = ax.images
    np.testing.assert_array_equal(np.asarray(base.get_array()), image.T)  # X across, Y up
    assert base.origin == "lower"
    shown = np.ma.getmaskarray(fill.get_array())
    np.testing.assert_array_equal(~shown, pred.T > 0.5)  # only predicted pixels are painted
    assert len(ax.collections) >= 1  # the label contour
    assert ax.get_title() == "t"
    _renders(ax.figure)


def test_show_slice_without_lesion_draws_no_contour_and_rejects_bad_shapes():
    ax = viz.show_slice(np.ones((6, 6)), np.zeros((6, 6)))
    assert len(ax.collections) == 0
    with pytest.raises(ValueError, match="2D slice"):
        viz.show_slice(np.ones((2, 6, 6)))
    with pytest.raises(ValueError, match="label shape"):
        viz.show_slice(np.ones((6, 6)), np.zeros((5, 6)))


def test_largest_lesion_slice():
    _, label = _case()
    counts = [(label[:, :, z] > 0).sum() for z in range(label.shape[2])]
    assert viz.largest_lesion_slice(label) == int(np.argmax(counts)) == 3
    assert viz.largest_lesion_slice(np.zeros((4, 4, 7))) == 3
    with pytest.raises(ValueError):
        viz.largest_lesion_slice(np.zeros((4, 4)))


def test_render_case_slice_panels_and_titles():
    image, label = _case(channels=3)
    fig = viz.render_case_slice(image, label, 1, channel_names=["t2w", "adc", "hbv"])
    assert len(fig.axes) == 3
    assert [a.get_title().split(" |")[0] for a in fig.axes] == ["t2w", "adc", "hbv"]
    assert all("lesion 9 px" in a.get_title() for a in fig.axes)
    np.testing.assert_array_equal(np.asarray(fig.axes[1].images[0].get_array()), image[1, :, :, 1].T)
    one = viz.render_case_slice(image, label, 3, channel=2, show_label=False)
    assert len(one.axes) == 1 and len(one.axes[0].collections) == 0
    with pytest.raises(IndexError):
        viz.render_case_slice(image, label, 5)
    with pytest.raises(ValueError, match="same grid"):
        viz.render_case_slice(image, label[:-1], 0)


def test_slice_viewer_opens_on_largest_lesion_and_redraws_on_change(monkeypatch):
    monkeypatch.delenv(viz.STATIC_WIDGETS_ENV, raising=False)
    image, label = _case()
    calls = []
    original = viz.render_case_slice

    def spy(*args, **kwargs):
        calls.append(args[2:5])
        return original(*args, **kwargs)

    monkeypatch.setattr(viz, "render_case_slice", spy)
    widget = viz.slice_viewer(image, label, channel_names=["a", "b"])
    assert widget.kwargs == {"slice_index": 3, "channel": "all", "show_label": True}
    assert calls == [(3, "all", True)]  # drawn once with the defaults, as in CI
    widget.children[0].value = 1
    widget.children[1].value = 1
    assert calls[-1] == (1, 1, True)
    assert widget.children[0].max == image.shape[3] - 1


def test_plot_curves_plots_each_curve_and_checks_shapes():
    x = np.linspace(0.01, 0.99, 50)
    ax = viz.plot_curves(x, {"a": x**2, "b": 1 - x}, logy=True, xlabel="p")
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), x**2)
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="curve 'c'"):
        viz.plot_curves(x, {"c": x[:-1]})


def test_plot_distributions_counts_every_value_and_log_bins():
    volumes = np.array([3, 10, 30, 100, 1000, 0])
    fig = viz.plot_distributions(
        {"volume": volumes, "irregularity": [1.0, 1.2, 1.5]},
        log=["volume"],
        bins=4,
        reference={"volume": {"real": [143]}},
    )
    vol_ax, irr_ax = fig.axes
    heights = [p.get_height() for p in vol_ax.patches]
    assert sum(heights) == 5  # the zero cannot sit on a log axis
    assert vol_ax.get_xscale() == "log"
    assert sum(p.get_height() for p in irr_ax.patches) == 3
    assert any(line.get_xdata()[0] == 143 for line in vol_ax.lines)
    _renders(fig)
    # a sample within one decade (A-FL's gamma per slice) still gets several labelled ticks
    gammas = np.geomspace(0.0021, 0.019, 30)
    (gamma_ax,) = viz.plot_distributions({"gamma": gammas}, log=["gamma"]).axes
    low, high = gamma_ax.get_xlim()
    labelled = [t for t in gamma_ax.xaxis.get_major_locator()() if low <= t <= high]
    assert len(labelled) >= 3, labelled
    assert [gamma_ax.xaxis.get_major_formatter()(t, 0) for t in labelled[:3]] == ["0.002", "0.005", "0.01"]


def test_plot_study_summary_bars_dots_and_curves():
    rng = np.random.default_rng(0)
    arms, seeds, cases = ["ce", "afl"], [0, 1, 2], [f"c{i}" for i in range(5)]
    table = pd.DataFrame(
        [
            {"arm": a, "seed": s, "case": c, "dice": rng.random(), "target_voxels": 0 if c == "c0" else 10}
            for a in arms
            for s in seeds
            for c in cases
        ]
    )
    history = pd.DataFrame(
        [{"arm": a, "seed": s, "epoch": e, "val_dice": rng.random()} for a in arms for s in seeds for e in (1, 2)]
    )
    fig = viz.plot_study_summary(table, history, title="a study")
    left, right = fig.axes
    per_seed = table.groupby(["arm", "seed"])["dice"].mean()
    np.testing.assert_allclose([p.get_height() for p in left.patches], [per_seed[a].mean() for a in arms])
    lesion = table[table["target_voxels"] > 0].groupby("arm")["dice"].mean()
    dash = next(line for line in left.lines if line.get_marker() == "_")
    np.testing.assert_allclose(dash.get_ydata(), [lesion[a] for a in arms])
    assert [line.get_label() for line in right.lines] == arms
    np.testing.assert_allclose(
        right.lines[1].get_ydata(), history[history["arm"] == "afl"].groupby("epoch")["val_dice"].mean()
    )
    assert fig._suptitle.get_text() == "a study"
    _renders(fig)


def test_plot_adaptive_example_and_explorer_wiring(monkeypatch):
    monkeypatch.delenv(viz.STATIC_WIDGETS_ENV, raising=False)
    mask = np.zeros((16, 16))
    mask[5:10, 6:11] = 1
    weight = np.linspace(0, 1, 256).reshape(16, 16)
    fig = viz.plot_adaptive_example(mask, weight, gamma=0.0123, alpha=0.9)
    np.testing.assert_allclose(np.asarray(fig.axes[1].images[0].get_array()), weight.T)
    assert "gamma=0.0123" in fig.axes[0].get_title() and "image 16 x 16" in fig.axes[0].get_title()
    for ax in fig.axes[:2]:  # both panels zoomed on the lesion's window
        assert ax.get_xlim() == pytest.approx(viz.lesion_window(mask)[0])
        assert ax.get_ylim() == pytest.approx(viz.lesion_window(mask)[1])
    assert "(1-p_t)" in fig.axes[2].get_ylabel()  # the colour bar says what it shows
    with pytest.raises(ValueError):
        viz.plot_adaptive_example(mask, weight[:-1], gamma=0, alpha=1)

    seen = []

    def example(radius, irregularity, variant):
        seen.append((radius, irregularity, variant))
        return {"mask": mask, "weight": weight, "gamma": radius / 100, "alpha": 0.5}

    widget = viz.adaptive_explorer(example, defaults={"radius": 6.0})
    assert seen == [(6.0, 0.0, "paper")]
    widget.children[2].value = "scale_aware"
    assert seen[-1] == (6.0, 0.0, "scale_aware")


def test_show_cases_grid():
    img = np.random.default_rng(1).normal(size=(8, 8))
    lab = (img > 1).astype(float)
    fig = viz.show_cases([{"image": img, "label": lab, "pred": lab, "title": f"c{i}"} for i in range(5)], ncols=3)
    assert len(fig.axes) == 6
    assert [a.get_title() for a in fig.axes[:5]] == [f"c{i}" for i in range(5)]
    with pytest.raises(ValueError):
        viz.show_cases([])


def test_adaptive_example_weight_is_alpha_t_times_modulating_factor():
    out = viz.adaptive_example(radius=6.0, irregularity=0.3, variant="paper", size=48, seed=2)
    mask, prob = out["mask"].astype(bool), out["prob"].astype(np.float64)
    f = mask.mean()
    # paper: alpha = 1 - f, gamma = f + mean |grad m| (numpy.gradient differences)
    grad = np.sqrt(sum(g**2 for g in np.gradient(mask.astype(float))))
    assert out["alpha"] == pytest.approx(1 - f, abs=1e-6)
    assert out["gamma"] == pytest.approx(f + grad.mean(), abs=1e-6)
    p_t = np.where(mask, prob, 1 - prob)
    alpha_t = np.where(mask, out["alpha"], 1 - out["alpha"])
    np.testing.assert_allclose(out["weight"], alpha_t * (1 - p_t) ** out["gamma"], rtol=1e-4, atol=1e-6)
    scale_aware = viz.adaptive_example(radius=6.0, irregularity=0.3, variant="scale_aware", size=48, seed=2)
    assert scale_aware["gamma"] > 10 * out["gamma"]  # the variant that really focuses


def test_static_widgets_draw_the_default_view_once_and_return_none(monkeypatch):
    monkeypatch.setenv(viz.STATIC_WIDGETS_ENV, "1")
    image, label = _case()
    calls = []
    original = viz.render_case_slice
    monkeypatch.setattr(viz, "render_case_slice", lambda *a, **k: calls.append(a[2:5]) or original(*a, **k))
    assert viz.slice_viewer(image, label) is None
    assert calls == [(3, "all", True)]
    seen = []

    def example(**kw):
        seen.append(kw)
        return {"mask": np.ones((4, 4)), "weight": np.ones((4, 4)), "gamma": 0, "alpha": 1}

    assert viz.adaptive_explorer(example, defaults={"radius": 5.0, "variant": "scale_aware"}) is None
    assert seen == [{"radius": 5.0, "irregularity": 0.0, "variant": "scale_aware"}]


def test_lesion_window_frames_the_lesion_with_a_margin():
    mask = np.zeros((100, 80), bool)
    mask[40:50, 20:24] = True  # rows 40..49 (centre 44.5), columns 20..23 (centre 21.5)
    (x0, x1), (y0, y1) = viz.lesion_window(mask, margin=1.0)
    half = (10 / 2) * 2  # the box's larger half-size (5 voxels) doubled by the margin
    assert (x0, x1) == pytest.approx((44.5 - half, 44.5 + half))
    assert (y0, y1) == pytest.approx((21.5 - half, 21.5 + half))
    assert x0 < 39.5 and x1 > 49.5 and y0 < 19.5 and y1 > 23.5  # the whole lesion is inside
    # a lesion at the border: the window stops at the image's edge; a tiny one gets min_half
    corner = np.zeros((30, 30), bool)
    corner[0, 0] = True
    assert viz.lesion_window(corner, min_half=6) == ((-0.5, 6.0), (-0.5, 6.0))
    assert viz.lesion_window(np.zeros((5, 7))) == ((-0.5, 4.5), (-0.5, 6.5))
    with pytest.raises(ValueError, match="2D"):
        viz.lesion_window(np.zeros((2, 3, 4)))


def test_plot_loss_shares_stacks_each_row_left_to_right():
    parts = ["empty", "background", "lesion"]
    index = pd.MultiIndex.from_tuples([("afl", 0, "network"), ("afl", 0, "p_t 0.9"), ("ce", 1, "network")])
    table = pd.DataFrame([[0.6, 0.3, 0.1], [0.9, 0.05, 0.05], [0.5, 0.5, 0.0]], index=index, columns=parts)
    ax = viz.plot_loss_shares(table.assign(other=7.0), parts)
    bars = ax.patches
    assert len(bars) == 3 * len(parts)
    for k, part in enumerate(parts):  # one container per part, rows from the top
        row_bars = sorted(bars[3 * k : 3 * k + 3], key=lambda b: -b.get_y())
        np.testing.assert_allclose([b.get_width() for b in row_bars], table[part])
        np.testing.assert_allclose([b.get_x() for b in row_bars], table[parts[:k]].sum(axis=1))
    top_down = [label.get_text() for _, label in sorted(zip(ax.get_yticks(), ax.get_yticklabels()), reverse=True)]
    assert top_down == ["afl, 0, network", "afl, 0, p_t 0.9", "ce, 1, network"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == parts
    _renders(ax.figure)
    with pytest.raises(KeyError, match="lesion"):
        viz.plot_loss_shares(table.drop(columns="lesion"), parts)
