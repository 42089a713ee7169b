"""File names of a run folder (one place: studies and reports refer to these, not to string literals)."""

MANIFEST = "run.json"  # kind, version, git sha, identity (what determines the numbers)
CONFIG = "config.yaml"  # the resolved config, secrets removed
SAMPLES = "samples.jsonl"  # one record per judged sample, appended as it goes
METRICS = "metrics.json"
DONE = "DONE"  # written last: the run (or sub-run) finished
PROBE_FILE = "probe.jsonl"  # the judge-free forgetting probe: one row per evaluation point of a study
