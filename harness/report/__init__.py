"""Reports of a matrix run: the article-style table (rich and plain text), JSON for machines, a self-contained
HTML page with a plot of success against recall delay and one protocol transcript per scenario."""

from recall_lab.harness.report.html_report import render_html
from recall_lab.harness.report.json_report import load_json, write_json
from recall_lab.harness.report.plot import ReportUnavailable, plot_available
from recall_lab.harness.report.table import render_table, table_text

__all__ = ["ReportUnavailable", "load_json", "plot_available", "render_html", "render_table", "table_text",
           "write_json"]
