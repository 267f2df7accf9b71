"""The interactive widgets of 01 (slice viewer) and 03 (gamma explorer) in a real browser.

For each notebook: open it in JupyterLab, run all cells, wait for an idle kernel; then, in
every ``ipywidgets.interactive`` on the page, move each slider and pick another entry of each
menu, and check that the figure is redrawn (its PNG bytes change). No widget may fail to
display and the page may log no error. Only widget types are relied on, not notebook text.
"""

from __future__ import annotations

import re

import pytest

RUN_ALL_MS = 300_000  # 01 generates its synthetic cases (8 with quick): seconds here, minutes on a slow CPU
REDRAW_MS = 60_000
PNG = re.compile(r"^data:image/png;base64,")

# The notebook panel in front, its kernel and its run-all result (window.jupyterapp:
# --LabApp.expose_app_in_browser).
_CURRENT = "window.jupyterapp && window.jupyterapp.shell.currentWidget"
_KERNEL_IDLE = f"() => {{ const w = {_CURRENT}; return !!w && w.sessionContext?.session?.kernel?.status === 'idle'; }}"
_OPENED = f"name => {{ const w = {_CURRENT}; return !!w && w.context?.path === name && w.context.isReady; }}"
_RUN_ALL = """() => {
    window.aflRunAll = undefined;
    window.jupyterapp.commands.execute('notebook:run-all-cells').then(
        ok => { window.aflRunAll = ok; }, error => { window.aflRunAll = String(error); });
}"""


def _run_all(page, lab, name: str) -> None:
    page.goto(lab.notebook_url(name))
    page.wait_for_function(_OPENED, arg=name, timeout=120_000)
    page.wait_for_function(_KERNEL_IDLE, timeout=120_000)  # started, and not restarted under us
    page.evaluate(_RUN_ALL)
    page.wait_for_function("() => window.aflRunAll !== undefined", timeout=RUN_ALL_MS)
    # NotebookActions.runAll resolves to true only when every cell ran without an error.
    assert page.evaluate("() => window.aflRunAll") is True, f"{name}: a cell failed (see the notebook)"
    page.wait_for_function(_KERNEL_IDLE, timeout=REDRAW_MS)


def _figure(widget):
    return widget.locator("img").first


def _changes_the_figure(widget, action, what: str) -> None:
    from playwright.sync_api import expect

    figure = _figure(widget)
    expect(figure).to_be_visible(timeout=REDRAW_MS)
    before = figure.get_attribute("src")
    expect(figure).to_have_attribute("src", PNG)
    action()
    expect(figure, f"the figure was not redrawn after moving {what}").not_to_have_attribute(
        "src", before, timeout=REDRAW_MS
    )
    expect(figure).to_have_attribute("src", PNG, timeout=REDRAW_MS)  # redrawn, not replaced by an error


def _slide(slider) -> None:
    """Move a noUiSlider handle one step with the keyboard (as a user without a mouse would)."""
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")


def _exercise(page, name: str) -> int:
    """Move every slider and menu of every interactive widget; return how many were moved."""
    from playwright.sync_api import expect

    widgets = page.locator(".widget-interact")
    expect(widgets.first).to_be_visible(timeout=REDRAW_MS)
    moved = 0
    for i in range(widgets.count()):
        widget = widgets.nth(i)
        sliders = widget.locator(".widget-slider:has(.noUi-handle)")
        for k in range(sliders.count()):
            _changes_the_figure(widget, lambda: _slide(sliders.nth(k)), f"{name} slider {k}")
            moved += 1
        menus = widget.locator(".widget-dropdown select")
        for k in range(menus.count()):
            menu = menus.nth(k)
            options = menu.locator("option")
            current = menu.input_value()
            other = next(
                v for v in (options.nth(j).get_attribute("value") for j in range(options.count())) if v != current
            )
            _changes_the_figure(widget, lambda: menu.select_option(other), f"{name} menu {k}")
            moved += 1
    return moved


@pytest.mark.parametrize("name, controls", [("01_data.ipynb", 2), ("03_adaptive_focusing.ipynb", 3)])
def test_widgets_redraw_in_jupyterlab(lab, page, name, controls):
    from playwright.sync_api import expect

    _run_all(page, lab, name)
    expect(page.get_by_text("Error displaying widget")).to_have_count(0)
    # 01: the slice slider and the channel menu; 03: the radius and irregularity sliders and the variant menu.
    assert _exercise(page, name) >= controls
    expect(page.get_by_text("Error displaying widget")).to_have_count(0)
    assert page.errors == [], f"{name}: the page logged errors: {page.errors}"
