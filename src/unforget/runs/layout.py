"""File names of a run folder (one place: studies and reports refer to these, not to string literals)."""

MANIFEST = "run.json"  # kind, version, git sha, identity (what determines the numbers)
CONFIG = "config.yaml"  # the resolved config, secrets removed
SAMPLES = "samples.jsonl"  # one record per judged sample, appended as it goes
METRICS = "metrics.json"
DONE = "DONE"  # written last: the run (or sub-run) finished
PROBE_FILE = "probe.jsonl"  # the judge-free forgetting probe: one row per evaluation point of a study
TRAIN_LOG = "train_log.jsonl"  # one row per optimiser step of a fine-tuning run
ALIGNMENT_FILE = "alignment.jsonl"  # EMT: image-text alignment per epoch and dataset
LANGUAGE_FILE = "language.jsonl"  # judge-free language scores (reference log-likelihood, perplexity) per evaluation
REPLAY_FILE = "replay.jsonl"  # 2x2: the base model's answers that a replay source trains on
