"""Tables (LaTeX booktabs + Markdown) and figures, made from metrics.json files only."""
