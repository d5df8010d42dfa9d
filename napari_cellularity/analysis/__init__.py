"""The analysis pipeline: region -> network maps -> nuclei -> cellularity -> overlays, report, files.

Modules, in data-flow order (no Qt anywhere):

* :mod:`.regions` — which level-0 pixels to analyse (view, drawn ROI, whole image, ``--roi``).
* :mod:`.engine` — :func:`analyze_region`, the one orchestrator (a progress-yielding
  generator) used by the Analyze widget and the ``analyze`` command.
* :mod:`.cache` — loaded networks and the on-disk maps of big regions analysed in the viewer.
* :mod:`.display` — where maps land on the screen (overlay translate, growing canvases,
  downsampled display of big regions).
* :mod:`.report` — the report of an analysed region (summary, category, CSV / JSON).
* :mod:`.outputs` — :func:`analyze_image`: one input analysed into a result folder.
"""

from __future__ import annotations

from .engine import AnalysisSettings, RegionAnalysis, analyze_region
from .regions import Level0Box, RegionError, RoiError
from .report import AnalysisSummary

__all__ = ["AnalysisSettings", "AnalysisSummary", "Level0Box", "RegionAnalysis", "RegionError", "RoiError",
           "analyze_region"]
