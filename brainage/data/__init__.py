"""Data: input contract, synthetic cohorts (ICBM152-based) and templates."""
