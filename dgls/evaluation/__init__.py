"""Evaluation that drives the whole pipeline: `dgls eval`, side-by-side comparisons, function tests, the model card."""
