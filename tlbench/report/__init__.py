"""tlbench-report: results.json files of many runs gathered into the tables and figures researchers
publish (mean ± std over seeds or splits, best cell per column marked)."""
