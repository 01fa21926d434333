"""Reports: render attribution results (tables, NIfTI maps, figures) as a self-contained HTML page.

``render`` and ``figures`` import no torch (style note 13: attribution computes, report renders); ``command`` drives
the model through ``brainage.attribution.cohort`` and is imported only by the CLI.
"""
