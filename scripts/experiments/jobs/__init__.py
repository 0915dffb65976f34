"""Runs as scheduler jobs through submitit, shared by the convergence study and Table 2: flags (the executor and
its settings, --dry_run), run_job (one run folder trained or resumed, then tested and evaluated; stops and is
requeued on the scheduler's warning signal), events (what each job did, in its run's job folder), submit (submit,
throttle, wait, report failures) and status (every run's state from the folders alone). See docs/cluster.md."""
