"""What the stages (eval/, training/, annotate/, benchmarks/, the app's Benchmarks tab) share and the guard does not
need to run: the committed benchmark splits, label specs, report files and the metrics computed over them.

It lives beside the stages, outside the ``guardreasoner`` wheel; the records the stages pass to each other through
files (predictions, flags, rows) stay in the core, which defines them."""
