"""brainage.predict: batch brain-age prediction over NIfTI files (`brainage predict`).

Modules: `model` (safe loading from a .ckpt, `runs:/` or `models:/` URI; input-contract check), `decode` (decode
worker processes that survive a worker's death, header size limit), `stream` (predict in batches, flip TTA,
non-finite outputs as errors), `output` (rows, fsynced journal, output lock, atomic CSV), `distributed` (Lightning
DDP with per-rank shards), `command` (the CLI). Research use only, not for diagnosis.
"""

from __future__ import annotations

from brainage.predict.command import main
from brainage.predict.model import LoadedModel, ModelLoadError, load_model
from brainage.predict.output import OUTPUT_COLUMNS, result_row, summarise, write_csv_atomic
from brainage.predict.stream import SubjectResult, predict_iter

__all__ = [
           "OUTPUT_COLUMNS",
           "LoadedModel",
           "ModelLoadError",
           "SubjectResult",
           "load_model",
           "main",
           "predict_iter",
           "result_row",
           "summarise",
           "write_csv_atomic",
]
