"""On-disk contracts, the ground floor of brainage: what a checkpoint holds and how it is read and written safely
(`checkpoint`), the model card (`card`), the age-bias correction stored in it (`bias`), the per-scan routing record
that predict saves and report reads (`routing`), and atomic file writes (`atomic`).

Every reader and writer of these formats goes through these modules. They import no other brainage package, so
data, model, training, predict, prepare, attribution and report can all build on them (tests/test_layers.py).
"""
