"""The run folder and its state: atomic writes, checkpoint files and their checksums, the folder's lock and
logs, run names and lookup, the convergence record, and test.py's result files."""
