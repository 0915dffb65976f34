"""Command-line helpers for the entry points and options: errors a user can act on (cli), flag value types
(arg_types), and the plugin registry that maps --model / --dataset_mode to a file (registry)."""
