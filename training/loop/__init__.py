"""The loop in one command: corrections in, a gated new encoder screen out, as a versioned release.

    python -m training.loop --dry-run            # what a round would do now
    python -m training.loop                      # one round
    python -m training.loop rollback             # serve the release before the current one
    python -m training.loop status               # the served version, the releases and the rounds so far

A round:

1. collect (``collect.py``): new flags from the app's queue and reviews submitted in Argilla since the last round
   (annotate's pull code and records), conflicting reviews reported and left out, inputs de-duplicated against
   earlier rounds (``STATE/rounds.jsonl``);
2. learn (``learn.py``): the verdict encoder's three heads refitted on the frozen body's last-layer means
   (``features.py``), from the shipped heads and pulled towards them, with every correction ever made
   up-weighted; temperatures and thresholds chosen again on the validation rows. The new reviews also become
   weighted DPO pairs for the reasoning model (HS-DPO runs only where a GPU is present);
3. gate (``gate.py``): shipped and candidate on the 13 cells' test rows (reasoning off) and on every correction
   ever made; ship only if no cell's strict F1 falls below the shipped one's 95% interval and no correction the
   shipped screen answered as corrected is lost (the report lists the corrections still wrong, and why);
4. ship (``releases.py``): a new release folder (the screen, a card with the round's report and changelog
   entry) written whole, then the ``current`` pointer replaced atomically;
5. report (``report.py``): JSON, markdown and a plotly chart, in the release's card (or, when nothing ships,
   in the round's folder).

Two loops at once are refused (``state.Lock``); a failed gate leaves the served version untouched; an Argilla
outage uses nothing and keeps the inputs for the next run.
"""
