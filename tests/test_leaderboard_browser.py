"""The built leaderboard page in a real browser: headless Chromium sorts a column and loads the plots.

The page's behaviour is JavaScript, so only a browser can check it. The test injects a small driver
script into a copy of the built page that clicks a column header (a real DOM click event, handled by the
page's own listener), records the row order after one and two clicks and whether every plot image
decoded, and writes that into the DOM; Chromium's ``--dump-dom`` prints the final DOM, which the test reads.

Skipped when no Chromium/Chrome is installed, except under CI (``CI`` set), where ``.ci/run`` installs
Debian's ``chromium`` and a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib

import pytest

from mibench.leaderboard import build_leaderboard
from tests.test_leaderboard import make_record, save

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

DRIVER = """
<script>
window.addEventListener("load", function () {
  function order(table) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[0].textContent; });
  }
  var table = document.querySelector("table.sortable");
  var button = table.querySelector("th[title] button");  // the first value column (titled by its key)
  var before = order(table);
  button.click();
  var first = order(table), firstSort = button.parentNode.getAttribute("aria-sort");
  button.click();
  var second = order(table), secondSort = button.parentNode.getAttribute("aria-sort");
  var images = Array.prototype.map.call(document.images, function (img) {
    return {src: img.getAttribute("src"), ok: img.complete && img.naturalWidth > 0};
  });
  var out = document.createElement("pre");
  out.id = "browser-test-result";
  out.textContent = JSON.stringify({before: before, first: first, firstSort: firstSort, second: second,
                                    secondSort: secondSort, images: images});
  document.body.appendChild(out);
});
</script>
"""


def _browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def _png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG (the page must really decode the plots, not just find the files)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_page_sorts_columns_and_loads_plots_in_headless_chromium(tmp_path):
    browser = _browser()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install a browser for this test (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium or Chrome installed")

    records = tmp_path / "records"
    # CPR in the first column: eap 0.6, eap-ig-inputs 0.9, random 0.1; the table lists methods by name.
    for method, cpr in (("eap", 0.6), ("eap-ig-inputs", 0.9), ("random", 0.1)):
        path = save(records, make_record(method, "ioi", "gpt2-tasks", cpr=cpr, cmd=1 - cpr))
        (path.parent / "faithfulness.png").write_bytes(_png())
    site = tmp_path / "site"
    build_leaderboard(records, site)
    page = (site / "index.html").read_text(encoding="utf-8")
    assert page.count("<img ") == 3
    (site / "index.html").write_text(page.replace("</body>", DRIVER + "</body>"), encoding="utf-8")

    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--allow-file-access-from-files", "--window-size=1400,8000", "--virtual-time-budget=10000",
               "--dump-dom", (site / "index.html").as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="browser-test-result">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the driver script did not report (exit {done.returncode}): {done.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))

    assert result["before"] == ["eap", "eap-ig-inputs", "random"]
    assert result["first"] == ["random", "eap", "eap-ig-inputs"] and result["firstSort"] == "ascending"
    assert result["second"] == ["eap-ig-inputs", "eap", "random"] and result["secondSort"] == "descending"
    assert len(result["images"]) == 3
    assert all(image["ok"] for image in result["images"]), result["images"]
    assert all(image["src"].startswith("plots/") for image in result["images"])
