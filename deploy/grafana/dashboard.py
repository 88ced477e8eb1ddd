"""The anomon Grafana dashboard as code: writes deploy/grafana/dashboards/anomon.json.

Run ``.venv/bin/python deploy/grafana/dashboard.py`` after changing a panel and commit both files;
tests/test_deploy_config.py fails when the committed JSON is not what this script writes, and
tests/test_deploy_prometheus.py runs every query below against a real Prometheus scraping a real
monitor.  Built with Grafana's own `grafana-foundation-sdk` (typed builders for the dashboard
schema, a test dependency).  Every panel and annotation queries the provisioned Prometheus data
source (uid ``anomon-prometheus``, provisioning/datasources/prometheus.yml).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent / "dashboards" / "anomon.json"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="anomon-prometheus")
RATE = "$__rate_interval"
WIDTH = 24


def query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().datasource(DATASOURCE).expr(expr).legend_format(legend or "__auto").ref_id(ref)


def queries(*pairs: tuple[str, str]) -> list[prometheus.Dataquery]:
    """(expr, legend) pairs as queries A, B, C, ..."""
    return [query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def graph(title: str, description: str, unit: str, targets: Sequence[prometheus.Dataquery], *,
          width: int = 12, bars: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
             .targets(list(targets)).span(width).height(8).fill_opacity(10).line_width(1)
             .legend(common.VizLegendOptions().show_legend(True).display_mode(common_models.LegendDisplayMode.TABLE)
                     .placement(common_models.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"]))
             .tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI)
                      .sort(common_models.SortOrder.DESCENDING)))
    if bars:
        panel = panel.draw_style(common_models.GraphDrawStyle.BARS).fill_opacity(80)
    return panel


def single(title: str, description: str, unit: str, target: prometheus.Dataquery, *, width: int = 6,
           text: common_models.BigValueTextMode = common_models.BigValueTextMode.VALUE) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
            .with_target(target).span(width).height(4).text_mode(text)
            .graph_mode(common_models.BigValueGraphMode.NONE)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def score_heatmap() -> heatmap.Panel:
    target = query(f"sum by (le) (increase(anomon_score_ratio_bucket[{RATE}]))", "{{le}}").format(
        PromQueryFormat.HEATMAP)
    return (heatmap.Panel().title("Anomaly score / threshold").datasource(DATASOURCE).with_target(target)
            .description("Events per score bucket, scores divided by the alert threshold of the model that scored "
                         "them: 1 is the threshold, everything at or above it raised an alert.")
            .span(WIDTH).height(9).calculate(False)
            .color(heatmap.HeatmapColorOptions().mode(heatmap_models.HeatmapColorMode.SCHEME).scheme("Oranges")
                   .scale(heatmap_models.HeatmapColorScale.EXPONENTIAL).exponent(0.5))
            .y_axis(heatmap.YAxisConfig().unit("short").decimals(2))
            .rows_frame(heatmap.RowsHeatmapOptions().layout(common_models.HeatmapCellLayout.LE))
            .show_tooltip()
            .cell_values(heatmap.CellValues().unit("short")))


def rows() -> list[tuple[str, list[Builder]]]:
    return [
        ("Traffic", [
            graph("Events / s by result", "Events read from the input topic: scored, or sent to the dead-letter "
                  "topic.", "ops", queries((f"sum by (result) (rate(anomon_events_total[{RATE}]))", "{{result}}"))),
            graph("Alerts / s by severity", "Alerts published to the alert topic, by severity band.", "ops",
                  queries((f"sum by (severity) (rate(anomon_alerts_total[{RATE}]))", "{{severity}}"))),
            graph("Alert ratio and its baseline", "Alerts per scored event (about the model's target rate on "
                  "normal traffic) and the level above which AnomonAnomalyRateHigh fires after 15 minutes.",
                  "percentunit", queries(("anomon:alert_ratio:rate5m", "alerts per scored event (5m)"),
                                         ("5 * clamp_min(anomon:alert_ratio:avg1d, 0.001)",
                                          "AnomonAnomalyRateHigh above this"))),
            graph("Dead letters / s by reason", "Unusable events sent to the dead-letter topic, by reason; "
                  "fields the schema does not define (ignored, not an error).", "ops",
                  queries((f"sum by (reason) (rate(anomon_dead_letter_total[{RATE}]))", "{{reason}}"),
                          (f"sum(rate(anomon_unknown_fields_total[{RATE}]))", "unknown fields (ignored)"))),
            graph("Invalid values / s by field", "Values that could not be read as their field's type, scored as "
                  "missing (monitor.invalid_values: score).", "ops",
                  queries((f"sum by (field) (rate(anomon_invalid_values_total[{RATE}]))", "{{field}}")),
                  width=WIDTH),
        ]),
        ("Scores", [score_heatmap()]),
        ("Latency and lag", [
            graph("Processing time per batch", "Decode, score and queue the alerts of one polled batch.", "s",
                  queries((f"histogram_quantile(0.5, sum by (le) (rate(anomon_processing_seconds_bucket[{RATE}])))",
                           "p50"),
                          (f"histogram_quantile(0.99, sum by (le) (rate(anomon_processing_seconds_bucket[{RATE}])))",
                           "p99"))),
            graph("Event lag", "Scoring time minus event time.", "s",
                  queries((f"histogram_quantile(0.5, sum by (le) (rate(anomon_event_lag_seconds_bucket[{RATE}])))",
                           "p50"),
                          (f"histogram_quantile(0.99, sum by (le) (rate(anomon_event_lag_seconds_bucket[{RATE}])))",
                           "p99"))),
            graph("Consumer lag by partition", "Messages of the input topic not yet read, per partition.", "short",
                  queries(("sum by (partition) (anomon_consumer_lag_messages)", "partition {{partition}}")),
                  width=WIDTH),
        ]),
        ("Model and monitors", [
            single("Monitors up", "Monitors answering Prometheus' scrapes.", "short",
                   query('sum(up{job="anomon"})', "monitors")),
            single("Model version", "The model bundle each monitor scores with.", "none",
                   query("max by (version) (anomon_model_info)", "{{version}}"),
                   text=common_models.BigValueTextMode.NAME),
            single("Model age", "Time since the active bundle was trained (AnomonModelStale: over 30 days).", "s",
                   query("time() - max(anomon_model_created_timestamp_seconds)", "age")),
            single("Alert threshold", "The active model's alert threshold (score units).", "short",
                   query("max(anomon_threshold)", "threshold")),
            graph("Model reloads", "New bundles loaded, or refused (failed checks: the previous model stays).",
                  "short", queries((f"sum by (result) (increase(anomon_model_reloads_total[{RATE}]))", "{{result}}")),
                  width=8, bars=True),
            graph("Drift detections", "Drift detected per field (_score: the anomaly score stream), by detector.",
                  "short", queries((f"sum by (detector, field) (increase(anomon_drift_detected_total[{RATE}]))",
                                    "{{field}} ({{detector}})")), width=8, bars=True),
            graph("Publish failures", "Records Kafka refused for good and the monitor set aside, by kind.", "short",
                  queries((f"sum by (kind) (increase(anomon_publish_failures_total[{RATE}]))", "{{kind}}")),
                  width=8, bars=True),
        ]),
    ]


ANNOTATIONS = [
    ("Model changes", "changes(anomon_model_created_timestamp_seconds[2m]) > 0", "blue"),
    ("Drift", "sum by (detector, field) (increase(anomon_drift_detected_total[2m])) > 0", "orange"),
]


def build() -> dict:
    """The dashboard as the JSON object Grafana provisions."""
    board = (dashboard.Dashboard("anomon").uid("anomon").tags(["anomon"]).refresh("30s").time("now-3h", "now")
             .timezone("browser").tooltip(models.DashboardCursorSync.CROSSHAIR).readonly()
             .description("Events, alerts, dead letters, scores, latency, lag, model and drift of the anomon "
                          "monitors (Prometheus job anomon)."))
    for name, expr, color in ANNOTATIONS:
        board = board.annotation(dashboard.AnnotationQuery().name(name).datasource(DATASOURCE).expr(expr)
                                 .enable(True).icon_color(color))
    panel_id = 0
    for title, panels in rows():
        panel_id += 1
        board = board.with_row(dashboard.Row(title).id(panel_id))
        for panel in panels:
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))
    return json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.write_text(render())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
