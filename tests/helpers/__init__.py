"""Test helpers shared by several test packages: tiny checkpoints, real NIfTI scans, tiny fit arguments."""
