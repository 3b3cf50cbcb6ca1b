"""The annotation loop: disagreements go to Argilla, reviewers correct them, corrections come back as DPO pairs."""
