"""Analyses fitted on one extraction's features, never another forward pass (conf/analysis/):
`layer_curve` (each layer alone, the whole embedding, optionally layers 1..i) and `few_shot` (k images
per class x seeds, several methods, intervals and paired tests). Each writes analysis/<name>.json,
.csv and .png in the run directory, and its record goes into results.json `analyses`."""
