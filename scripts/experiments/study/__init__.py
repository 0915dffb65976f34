"""The convergence study (entry point: `python -m scripts.experiments.convergence_study`): cli (flags, the loop
over runs), plan (entries, matched settings, run folders), trained_model (a finished run opened for evaluation),
evaluation (params, test metrics, KID), diversity (SEGAN's codes), records (the CSV files), report (figures and
tables)."""
