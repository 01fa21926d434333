"""Reports: the expert-region attribution report as a pipeline, collect -> analyse -> render -> write.

``collect`` is the only module that runs the model (through ``brainage.predict``); ``analysis`` computes with the
pure ``brainage.attribution`` library; ``sections``, ``render`` and ``figures`` draw HTML and PNG and import no torch
(style note 13: attribution computes, report renders); ``write`` saves files; ``command`` is the CLI.
"""
