"""The report in a real browser: headless Chromium driven over the DevTools protocol.

The protocol runs over a pipe (``--remote-debugging-pipe``: Chromium reads commands on fd 3 and
writes replies on fd 4, each a JSON object ended by a NUL byte), so no websocket client or
other dependency is needed. That lets the test ask the live page whether every chart image
decoded, collect console messages, exceptions and CSP violations, and read the DOM back.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cleanpipe.report import build_report, write_report

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHART_IDS = ("chart-loss-mixture", "chart-noise-matrix", "chart-per-class", "chart-scores")
TIMEOUT_S = 30.0

# Payloads that leave a mark in the DOM if they ever run: a changed title, a body attribute.
PAYLOADS = (
    "<script>document.title='XSS-RAN'</script>",
    "<img src=x onerror=\"document.body.setAttribute('data-xss','img')\">",
    "\"><svg onload=\"document.body.setAttribute('data-xss','svg')\">",
    "' onmouseover='document.title=1' x='" + "padding to exceed the cell width " * 2,
)


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, binary: str, user_data_dir: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def _map_fds():  # in the child, before exec: the pipe ends become fds 3 and 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--remote-debugging-pipe",
                f"--user-data-dir={user_data_dir}", "about:blank"]
        # close_fds=False so fds 3 and 4 survive; Python's own fds are non-inheritable anyway.
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=_map_fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a command and wait for its reply (events arriving meanwhile are kept)."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._read()
            if event.get("method") == method:
                return event
            self.events.append(event)

    def _read(self) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no reply from Chromium over the DevTools pipe")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium); the browser test needs one")
    client = DevTools(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield client
    client.close()


def load(client: DevTools, path: Path) -> dict:
    """Open ``path`` in a fresh tab; return what the page reports and the problems logged."""
    target = client.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = client.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    client.events.clear()
    for domain in ("Page", "Runtime", "Log"):
        client.send(f"{domain}.enable", session=session)
    client.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
    client.wait_event("Page.loadEventFired")
    probe = """JSON.stringify({
        title: document.title,
        xss: document.body.getAttribute('data-xss'),
        images: Array.from(document.images).map(i => ({id: i.id, ok: i.complete && i.naturalWidth > 0})),
        svgs: document.querySelectorAll('svg').length,
        scripts: document.scripts.length,
        rows: document.querySelectorAll('#suspicious-rows tbody tr').length,
        headers: Array.from(document.querySelectorAll('#suspicious-rows thead th')).map(t => t.textContent),
        text: document.body.innerText,
        dom: document.documentElement.outerHTML})"""
    got = client.send("Runtime.evaluate", {"expression": probe, "returnByValue": True},
                      session=session)
    page = json.loads(got["result"]["value"])
    problems = []
    for event in client.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            problems.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            problems.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            problems.append(params["entry"]["text"])
    client.send("Target.closeTarget", {"targetId": target})
    page["problems"] = problems
    return page


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_probe_catches_console_errors_and_blocked_scripts(browser, tmp_path):
    # The negative control: without it a broken event collector would pass every test below.
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><title>t</title></head><body>"
                   "<script>console.error('boom'); document.body.setAttribute('data-xss','ran')</script>"
                   "</body></html>")
    page = load(browser, bad)
    assert page["xss"] == "ran" and page["scripts"] == 1
    assert any("boom" in p for p in page["problems"]), page["problems"]


def test_report_loads_with_every_chart_and_no_console_errors(browser, report_html, tmp_path):
    out = tmp_path / "report.html"
    out.write_text(report_html, encoding="utf-8")
    page = load(browser, out)
    assert page["problems"] == []
    assert page["title"].startswith("cleanpipe report")
    images = {i["id"]: i["ok"] for i in page["images"]}
    assert set(CHART_IDS) <= set(images), images
    assert all(images[c] for c in CHART_IDS), f"chart image(s) failed to decode: {images}"
    assert page["scripts"] == 0
    assert page["rows"] == 50
    assert page["headers"][:6] == ["row", "given_label", "predicted_label", "label_score", "p_noisy",
                                   "is_label_issue"]
    for heading in ("Loss mixture", "Estimated noise matrix", "Per class", "Run details"):
        assert heading in page["text"]


def test_payloads_in_data_render_as_text_and_never_run(browser, make_flagged_result, tmp_path):
    result = make_flagged_result(class_names=PAYLOADS[:3], feature_names=PAYLOADS, source=PAYLOADS[0])
    out = write_report(result.table, tmp_path / "xss.html", summary=result.summary)
    page = load(browser, out)
    assert page["problems"] == []
    assert page["xss"] is None
    assert page["title"] == f"cleanpipe report: {PAYLOADS[0]}"  # the payload as text, not run
    assert page["scripts"] == 0 and page["svgs"] == 0
    assert {i["id"] for i in page["images"]} == set(CHART_IDS)  # no <img src=x> got in
    parser = _Tags()
    parser.feed(page["dom"])
    for tag, attrs in parser.tags:
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
    for payload in PAYLOADS[:3]:
        assert payload in page["text"]  # shown to the reader, exactly as in the data
    assert sum(h in PAYLOADS for h in page["headers"]) == len(PAYLOADS)


def test_report_with_training_section_renders(browser, flagged, make_training_metrics, tmp_path):
    out = write_report(flagged.table, tmp_path / "training.html", summary=flagged.summary,
                       training=make_training_metrics())
    page = load(browser, out)
    assert page["problems"] == []
    images = {i["id"]: i["ok"] for i in page["images"]}
    expected = {*CHART_IDS, "chart-training-curves", "chart-noise-model"}
    assert set(images) == expected and all(images.values()), f"chart image(s) failed to decode: {images}"
    assert page["scripts"] == 0
    assert "Training" in page["text"] and "dynamic-hard" in page["text"]


def test_multilabel_report_renders_its_charts_and_suspect_tags(browser, make_multilabel_result, tmp_path):
    result, _, _ = make_multilabel_result(tags=PAYLOADS[:3])
    out = write_report(result.table, tmp_path / "multilabel.html", summary=result.summary)
    page = load(browser, out)
    assert page["problems"] == []
    assert page["xss"] is None and page["title"] == "cleanpipe report: tags.parquet"
    images = {i["id"]: i["ok"] for i in page["images"]}
    expected = {"chart-loss-mixture", "chart-per-class", "chart-scores"}  # no noise-matrix heatmap
    assert set(images) == expected and all(images.values()), f"chart image(s) failed to decode: {images}"
    assert page["scripts"] == 0 and page["svgs"] == 0
    assert page["rows"] == 50
    assert page["headers"][:5] == ["row", "given_label", "predicted_label", "suspect_missing",
                                   "suspect_spurious"]
    assert "Multi-label issue report" in page["text"] and "Estimated noise matrix" not in page["text"]
    parser = _Tags()
    parser.feed(page["dom"])
    for tag, attrs in parser.tags:
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
    # The payload tags are shown as text, a long one cut with the whole of it in a tooltip.
    titles = {attrs.get("title") for _, attrs in parser.tags}
    for payload in PAYLOADS[:3]:
        assert payload[:39] in page["text"]
        assert len(payload) <= 40 or payload in titles


_TEXT_BOXES = """(() => {
  const svg = document.documentElement, r = svg.getBoundingClientRect();
  const rel = b => [b.left - r.left, b.top - r.top, b.right - r.left, b.bottom - r.top];
  const texts = Array.from(svg.querySelectorAll('g[id^="text_"]'));
  const boxes = texts.map(g => [g.id, ...rel(g.getBoundingClientRect())]).filter(b => b[3] > b[1]);
  // Glyph by glyph: the boxes of two slanted labels overlap even where their letters do not.
  const glyphs = texts.flatMap(g => Array.from(g.querySelectorAll('use, path'))
    .map(u => [g.id, ...rel(u.getBoundingClientRect())]).filter(b => b[3] - b[1] > 0.5));
  const overlaps = [];
  for (let i = 0; i < glyphs.length; i++) for (let j = i + 1; j < glyphs.length; j++) {
    const a = glyphs[i], b = glyphs[j];
    if (a[0] === b[0]) continue;
    const w = Math.min(a[3], b[3]) - Math.max(a[1], b[1]), h = Math.min(a[4], b[4]) - Math.max(a[2], b[2]);
    if (w > 1 && h > 1) overlaps.push([a[0], b[0]]);
  }
  return JSON.stringify({width: r.width, height: r.height, boxes, glyphs: glyphs.length, overlaps});
})()"""


def chart_text_boxes(client: DevTools, svg: bytes, path: Path) -> dict:
    """Every text of one chart as Chromium lays it out: id and (left, top, right, bottom) in px."""
    path.write_bytes(svg)
    target = client.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = client.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    client.send("Page.enable", session=session)
    client.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
    client.wait_event("Page.loadEventFired")
    got = client.send("Runtime.evaluate", {"expression": _TEXT_BOXES, "returnByValue": True},
                      session=session)
    client.send("Target.closeTarget", {"targetId": target})
    return json.loads(got["result"]["value"])


def test_no_chart_text_is_cut_off_or_drawn_over_other_text(browser, make_flagged_result,
                                                            make_training_metrics, tmp_path):
    # Long names everywhere a name reaches a chart: classes, and 12 of them.
    names = tuple(f"a rather long class name {i} of this table" for i in range(12))
    result = make_flagged_result(class_names=names)
    html = build_report(result.table, result.summary, training=make_training_metrics())
    charts = dict(re.findall(r'id="(chart-[a-z-]+)"[^>]*src="data:image/svg\+xml;base64,([^"]+)"', html))
    assert {*CHART_IDS, "chart-training-curves", "chart-noise-model"} <= set(charts), sorted(charts)
    for chart_id, data in charts.items():
        page = chart_text_boxes(browser, base64.b64decode(data), tmp_path / f"{chart_id}.svg")
        assert len(page["boxes"]) > 5, chart_id
        for name, left, top, right, bottom in page["boxes"]:
            assert left >= -0.5 and top >= -0.5, (chart_id, name, left, top)
            assert right <= page["width"] + 0.5 and bottom <= page["height"] + 0.5, (chart_id, name)
        assert page["glyphs"] > 20, chart_id
        assert page["overlaps"] == [], f"{chart_id}: texts drawn over each other: {page['overlaps'][:5]}"


CHECK_CHART_IDS = ("chart-duplicate-sizes", "chart-outliers", "chart-knn-labels")


def test_report_with_data_checks_renders_every_chart(browser, flagged_checks, tmp_path):
    out = write_report(flagged_checks.table, tmp_path / "checks.html", summary=flagged_checks.summary)
    page = load(browser, out)
    assert page["problems"] == []
    images = {i["id"]: i["ok"] for i in page["images"]}
    assert set(images) == {*CHART_IDS, *CHECK_CHART_IDS} and all(images.values()), images
    assert page["scripts"] == 0
    for heading in ("Duplicates", "Outliers", "Neighbours' labels", "Table checks", "Leakage"):
        assert heading in page["text"]


def test_no_check_chart_text_is_cut_off_or_drawn_over_other_text(browser, flagged_checks, tmp_path):
    html = build_report(flagged_checks.table, flagged_checks.summary)
    charts = dict(re.findall(r'id="(chart-[a-z-]+)"[^>]*src="data:image/svg\+xml;base64,([^"]+)"', html))
    assert set(CHECK_CHART_IDS) <= set(charts), sorted(charts)
    for chart_id in CHECK_CHART_IDS:
        page = chart_text_boxes(browser, base64.b64decode(charts[chart_id]), tmp_path / f"{chart_id}.svg")
        assert len(page["boxes"]) > 5, chart_id
        for name, left, top, right, bottom in page["boxes"]:
            assert left >= -0.5 and top >= -0.5, (chart_id, name, left, top)
            assert right <= page["width"] + 0.5 and bottom <= page["height"] + 0.5, (chart_id, name)
        assert page["glyphs"] > 20, chart_id
        assert page["overlaps"] == [], f"{chart_id}: texts drawn over each other: {page['overlaps'][:5]}"
