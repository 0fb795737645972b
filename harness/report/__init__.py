"""Reports of a matrix run: the article-style table (rich and plain text), JSON for machines, a self-contained
HTML page with a plot of success against recall delay and one protocol transcript per scenario."""

from harness.report.html_report import render_html
from harness.report.json_report import load_json, write_json
from harness.report.plot import ReportUnavailable, plot_available
from harness.report.table import render_table, table_text

__all__ = ["ReportUnavailable", "load_json", "plot_available", "render_html", "render_table", "table_text",
           "write_json"]
