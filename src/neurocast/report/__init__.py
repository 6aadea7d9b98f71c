"""Reports: summary tables and figures (matplotlib, Agg backend, PNG)."""
