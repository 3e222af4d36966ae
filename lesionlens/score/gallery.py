"""OUT/index.html of `lesionlens score --overlays`: one static page to browse a batch.

Self-contained (no server, no external asset; it opens from a local folder and from a bucket)
and linked by relative paths to each image's overlay (OUT/overlays/...) and thumbnail
(OUT/thumbs/..., a JPEG of a few kB). A summary (scored, rejected, called malignant; where
labels are known, accuracy, sensitivity and specificity at the model's threshold with the
pipeline's seeded class-stratified bootstrap intervals), then one row per image, sortable and
filterable by a few lines of plain JavaScript that show one page of rows at a time (10,000
rows open as fast as 100), then the rejected inputs with their reasons.

Every string from the archive (paths, ids, labels, class names, reasons) is untrusted: the
rows travel as JSON inside a `<script type="application/json">` block with `<`, `>` and `&`
escaped, and the script puts them in the page with `textContent` and DOM properties only,
never as HTML; what Python writes as HTML goes through `html.escape`; links are
percent-encoded relative paths.
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote

import numpy as np

from lesionlens.beam_files import write_bytes
from lesionlens.score.sinks import INDEX, THUMBS
from modules import contract as C

PAGE_SIZES = (50, 100, 500, 1000)
DEFAULT_PAGE_SIZE = 100
NOTICE = "Research use only, not for diagnosis."  # serving.overlay.NOTICE, on every page
_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple:
    """Sorts names as people read them: "malignant (2)" before "malignant (10)" (runs of
    digits compare as numbers, the rest without case; the page's script does the same with
    `Intl.Collator(..., {numeric: true})`)."""
    parts = _DIGITS.split(text)
    folded = tuple((int(p), p) if i % 2 else (p.casefold(), "") for i, p in enumerate(parts))
    return folded, text  # the name itself breaks ties ("a" and "A", "2" and "02")


def thumbnail_name(overlay: str) -> str:
    """OUT-relative thumbnail path of an OUT-relative overlay path (overlays/a/b.png ->
    thumbs/a/b.jpg)."""
    parts = overlay.split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    return "/".join([THUMBS, *parts[1:-1], f"{stem}.jpg"])


def _url(path: str | None) -> str | None:
    return quote(path, safe="/") if path else None


def label_metrics(rows: list[dict], resamples: int, seed: int, level: float) -> dict | None:
    """Accuracy, sensitivity, specificity (and AUC of P(malignant)) at the model's threshold
    over the rows whose label is known, each with its seeded class-stratified bootstrap
    interval (`modules.intervals.bootstrap`, as the pipeline's BootstrapIntervals); None when
    no row has a label. Malignant against the rest, as the pipeline's binary metrics."""
    from modules.intervals.bootstrap import point_estimates, served_scores, stratified_bootstrap

    known = [r for r in rows if r.get("label") in C.LABELS]
    if not known:
        return None
    labels = np.array([C.LABELS[r["label"]] for r in known])
    called = np.array([r["class_id"] == C.POSITIVE_LABEL for r in known])
    p = np.array([r["positive_probability"] or 0.0 for r in known], np.float64)
    scores = served_scores(p, called)
    point = point_estimates(labels, scores)
    bounds = stratified_bootstrap(labels, scores, resamples, seed, level)
    names = {
        "accuracy": "binary_accuracy",
        "sensitivity": "recall",
        "specificity": "specificity",
        "AUC": "auc",
    }
    return {
        "labelled": len(known),
        "positives": int((labels == C.POSITIVE_LABEL).sum()),
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "metrics": {
            shown: {"value": point[key], "interval": list(bounds[key])}
            for shown, key in names.items()
        },
    }


def _row(r: dict) -> dict:
    label = r.get("label") or None
    return {
        "id": r["image_id"],
        "cls": r["class_name"],
        "p": r.get("positive_probability"),
        "t": r.get("threshold"),
        "roi": r.get("roi_source"),
        "label": label,
        "right": None if label is None else label == r["class_name"],
        "ov": _url(r.get("gradcam_overlay")),
        "th": _url(thumbnail_name(r["gradcam_overlay"])) if r.get("gradcam_overlay") else None,
    }


def _script_json(value: object) -> str:
    """JSON that cannot end its <script> block or open a comment inside it."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _summary_html(summary: dict, rows: list[dict], metrics: dict | None, positive: str) -> str:
    e = html.escape
    called = sum(r["class_id"] == C.POSITIVE_LABEL for r in rows)
    thresholds = sorted({r["threshold"] for r in rows if r.get("threshold") is not None})
    threshold = _number(thresholds[0]) if len(thresholds) == 1 else "per image"
    items = [
        ("images scored", f"{len(rows):,}"),
        ("rejected", f"{summary.get('rejected', 0):,}"),
        (f"called {positive}", f"{called:,}"),
        (f"threshold on P({positive})", threshold),
    ]
    cells = "".join(f"<div class=stat><b>{e(v)}</b><span>{e(k)}</span></div>" for k, v in items)
    out = [f"<div class=stats>{cells}</div>"]
    if metrics is None:
        out.append("<p>No image has a known label: no accuracy, sensitivity or specificity.</p>")
        return "".join(out)
    level = round(100 * metrics["level"])
    head = f"<tr><th>metric</th><th>value</th><th>{level} % interval</th></tr>"
    body = "".join(
        f"<tr><td>{e(name)}</td><td class=num>{_number(m['value'])}</td>"
        f"<td class=num>[{_number(m['interval'][0])}, {_number(m['interval'][1])}]</td></tr>"
        for name, m in metrics["metrics"].items()
    )
    out.append(
        f"<table class=metrics>{head}{body}</table>"
        f"<p class=note>{metrics['labelled']:,} images with a known label "
        f"({metrics['positives']:,} {e(positive)}); {e(positive)} against the rest at the "
        f"model's threshold; intervals: {level} % percentile bootstrap, "
        f"{metrics['resamples']:,} resamples within each class, seed {metrics['seed']} "
        "(as the pipeline's BootstrapIntervals).</p>"
    )
    return "".join(out)


def _rejected_html(rejected: list[dict]) -> str:
    e = html.escape
    if not rejected:
        return "<h2>Rejected inputs: none</h2>"
    rows = "".join(
        f"<tr><td>{e(str(r.get('path', '')))}</td><td>{e(str(r.get('reason', '')))}</td></tr>"
        for r in sorted(rejected, key=lambda r: natural_key(str(r.get("path", ""))))
    )
    state = " open" if len(rejected) <= 50 else ""
    return (
        f"<h2>Rejected inputs: {len(rejected):,}</h2><details{state}><summary>what could not "
        f"be scored, and why</summary><table id=rejected><thead><tr><th>input</th><th>reason"
        f"</th></tr></thead><tbody>{rows}</tbody></table></details>"
    )


def render_index(
    rows: list[dict], rejected: list[dict], summary: dict, classes: tuple[str, ...]
) -> str:
    """The page's HTML (see the module docstring)."""
    from pipeline.config import PipelineConfig

    e = html.escape
    positive = classes[C.POSITIVE_LABEL] if len(classes) > C.POSITIVE_LABEL else "malignant"
    rows = sorted(rows, key=lambda r: natural_key(r["image_id"]))
    metrics = label_metrics(
        rows,
        PipelineConfig.interval_resamples,
        PipelineConfig.seed,
        PipelineConfig.interval_level,
    )
    data = {
        "rows": [_row(r) for r in rows],
        "classes": sorted({*classes, *(r["class_name"] for r in rows)}),
        "positive": positive,
        "pageSizes": PAGE_SIZES,
        "pageSize": DEFAULT_PAGE_SIZE,
    }
    title = f"LesionLens scores: {summary.get('source', '')}"
    model = f"{summary.get('model', '')} [{summary.get('signature', '')}]"
    return "".join(
        [
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            "<meta name=viewport content='width=device-width, initial-scale=1'>",
            f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
            f"<p id=notice role=note>{e(NOTICE)} The answers below come from a research model; ",
            "they are no clinical finding and must not guide a patient's care.</p>",
            f"<h1>{e(title)}</h1><p class=note>model {e(model)}; thumbnails: the image, and ",
            "beside it its Grad-CAM heat map (where the classifier's evidence is) with the ROI ",
            "the model used outlined; click one for the full overlay and its caption.</p>",
            _summary_html(summary, rows, metrics, positive),
            "<h2>Scored images</h2><div id=controls>",
            "<label>class <select id=f-class><option value=''>all</option></select></label>",
            "<label>answer <select id=f-right><option value=''>all</option>",
            "<option value=right>right</option><option value=wrong>wrong</option>",
            "<option value=unknown>no label</option></select></label>",
            "<label>image <input id=f-text type=search placeholder='part of the name'></label>",
            "<label>rows a page <select id=f-size></select></label>",
            "<span id=pager><button id=prev>&lsaquo; previous</button> <span id=status></span> ",
            "<button id=next>next &rsaquo;</button></span></div>",
            "<table id=rows><thead><tr><th>overlay</th>",
            "<th class=sortable data-key=id>image</th>",
            "<th class=sortable data-key=cls>predicted class</th>",
            f"<th class=sortable data-key=p>P({e(positive)})</th><th>threshold</th>",
            "<th class=sortable data-key=roi>roi_source</th>",
            "<th class=sortable data-key=label>label</th><th>right</th></tr></thead>",
            "<tbody></tbody></table>",
            "<noscript>The table of scored images needs JavaScript; predictions-*.jsonl holds ",
            "the same rows.</noscript>",
            _rejected_html(rejected),
            f"<script type=application/json id=data>{_script_json(data)}</script>",
            f"<script>{_JS}</script></body></html>",
        ]
    )


def write_index(
    out: str, rows: list[dict], rejected: list[dict], summary: dict, classes: tuple[str, ...]
) -> str:
    """Writes OUT/index.html (local or gs://); returns its path."""
    from apache_beam.io.filesystems import FileSystems

    path = FileSystems.join(out, INDEX)
    write_bytes(path, render_index(rows, rejected, summary, classes).encode("utf-8"))
    return path


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;"
    "color:#222}h1{font-size:1.4em;word-break:break-all}.note{color:#555;font-size:.9em}"
    ".stats{display:flex;gap:1em;flex-wrap:wrap}.stat{border:1px solid #ccc;border-radius:6px;"
    "padding:.5em 1em}.stat b{display:block;font-size:1.4em}.stat span{color:#555}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;"
    "text-align:left;vertical-align:middle}td.num{text-align:right;font-variant-numeric:"
    "tabular-nums}th.sortable{cursor:pointer;user-select:none}th.sortable:hover{"
    "background:#eef}th[aria-sort=ascending]::after{content:' \\25B2'}"
    "th[aria-sort=descending]::after{content:' \\25BC'}#rows img{width:196px;height:auto;"
    "display:block}#rows td.id{word-break:break-all;max-width:28em}#controls{display:flex;"
    "gap:1em;flex-wrap:wrap;align-items:center;margin:.5em 0}tr.wrong td.right{color:#b00;"
    "font-weight:bold}tr.right td.right{color:#070}#rejected td{word-break:break-all}"
    "#notice{background:#fff3cd;border:1px solid #e0b000;border-radius:6px;padding:.5em 1em;"
    "font-weight:bold}"
)

# Rows are drawn one page at a time, with createElement / textContent only.
_JS = r"""
(() => {
  const data = JSON.parse(document.getElementById('data').textContent);
  const rows = data.rows, $ = (id) => document.getElementById(id);
  const state = {key: 'id', dir: 1, page: 0, size: data.pageSize};
  for (const c of data.classes) $('f-class').add(new Option(c, c));
  for (const n of [...data.pageSizes, 'all']) $('f-size').add(new Option(n, n));
  $('f-size').value = String(state.size);
  const fmt = (v) => (v === null || v === undefined) ? '-' : v.toFixed(3);
  // names as people read them: "malignant (2)" before "malignant (10)"
  const natural = new Intl.Collator('en', {numeric: true, sensitivity: 'base'}).compare;
  const order = (x, y) => typeof x === 'string' ? natural(x, y) : (x < y ? -1 : x > y ? 1 : 0);
  const cmp = (a, b) => {
    const x = a[state.key], y = b[state.key];
    if (x === y) return natural(a.id, b.id) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    if (x === null || x === undefined) return 1;  // no value: last either way
    if (y === null || y === undefined) return -1;
    return (order(x, y) || (a.id < b.id ? -1 : 1)) * state.dir;
  };
  let shown = rows;
  function filter() {
    const cls = $('f-class').value, right = $('f-right').value;
    const text = $('f-text').value.toLowerCase();
    shown = rows.filter((r) => (!cls || r.cls === cls)
      && (!right || (right === 'unknown' ? r.right === null : r.right === (right === 'right')))
      && (!text || r.id.toLowerCase().includes(text)));
    shown.sort(cmp);
  }
  function cell(tr, text, cls) {
    const td = tr.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }
  function draw() {
    const size = state.size === 'all' ? shown.length || 1 : state.size;
    const pages = Math.max(1, Math.ceil(shown.length / size));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * size, page = shown.slice(start, start + size);
    const body = document.createElement('tbody');
    for (const r of page) {
      const tr = body.insertRow();
      tr.className = r.right === null ? '' : r.right ? 'right' : 'wrong';
      const td = tr.insertCell();
      if (r.th) {
        const a = document.createElement('a'), img = document.createElement('img');
        a.href = r.ov; img.src = r.th; img.loading = 'lazy'; img.alt = r.id;
        a.appendChild(img); td.appendChild(a);
      }
      cell(tr, r.id, 'id'); cell(tr, r.cls); cell(tr, fmt(r.p), 'num p');
      cell(tr, fmt(r.t), 'num'); cell(tr, r.roi ?? '-'); cell(tr, r.label ?? '-');
      cell(tr, r.right === null ? '-' : r.right ? 'yes' : 'no', 'right');
    }
    $('rows').replaceChild(body, $('rows').tBodies[0]);
    $('status').textContent = shown.length
      ? `rows ${start + 1}-${start + page.length} of ${shown.length} (${rows.length} scored), `
        + `page ${state.page + 1} of ${pages}`
      : `no row matches (${rows.length} scored)`;
    $('prev').disabled = state.page === 0;
    $('next').disabled = state.page >= pages - 1;
    for (const th of document.querySelectorAll('th.sortable')) {
      if (th.dataset.key === state.key)
        th.setAttribute('aria-sort', state.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }
  const refilter = () => { state.page = 0; filter(); draw(); };
  for (const id of ['f-class', 'f-right']) $(id).addEventListener('change', refilter);
  $('f-text').addEventListener('input', refilter);
  $('f-size').addEventListener('change', () => {
    const v = $('f-size').value;
    state.size = v === 'all' ? 'all' : Number(v); state.page = 0; draw();
  });
  $('prev').addEventListener('click', () => { state.page -= 1; draw(); });
  $('next').addEventListener('click', () => { state.page += 1; draw(); });
  for (const th of document.querySelectorAll('th.sortable')) {
    th.addEventListener('click', () => {
      const key = th.dataset.key;
      state.dir = state.key === key ? -state.dir : (key === 'p' ? -1 : 1);
      state.key = key; state.page = 0; shown.sort(cmp); draw();
    });
  }
  filter(); draw();
  document.body.dataset.renderedMs = performance.now().toFixed(1);
})();
"""
