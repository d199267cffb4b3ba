"""Pictures of explanations: colormaps, heatmap overlays, the paper's Figure 1 grid, PNG output.

* :mod:`camlens.viz.pictures`: colormaps (``jet`` and ``gray`` built in, matplotlib's when
  installed) and one picture per map (:func:`overlay`, :func:`heatmap_image`,
  :func:`pixel_space_image`).
* :mod:`camlens.viz.grid`: panel grids (:func:`figure1`, :func:`grid_layout`) and
  :func:`caption`.
* :mod:`camlens.viz.render`: an Explanation as a picture (:func:`explanation_image`,
  :func:`explanation_png`), :func:`shrink_to` and :func:`save_png` (atomic).
"""

from camlens.viz.grid import (
    DEFAULT_COLUMNS,
    GridLayout,
    Row,
    caption,
    figure1,
    figure1_layout,
    grid_layout,
    text_panel,
)
from camlens.viz.pictures import (
    BUILTIN_COLORMAPS,
    COLORMAPS,
    apply_colormap,
    colormap,
    heatmap_image,
    overlay,
    pixel_space_image,
)
from camlens.viz.render import explanation_image, explanation_png, save_png, shrink_to

__all__ = [
    "COLORMAPS",
    "BUILTIN_COLORMAPS",
    "DEFAULT_COLUMNS",
    "GridLayout",
    "Row",
    "apply_colormap",
    "caption",
    "colormap",
    "explanation_image",
    "explanation_png",
    "figure1",
    "figure1_layout",
    "grid_layout",
    "heatmap_image",
    "overlay",
    "pixel_space_image",
    "save_png",
    "shrink_to",
    "text_panel",
]
