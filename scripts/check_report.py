"""Open a `selfloop report` page in headless Chromium (Debian packages chromium and
chromium-driver) and print, as JSON, its title, every image's rendered size, whether all
rendered, and whether each given figure appears in the page's text.

    .venv/bin/python scripts/check_report.py runs/default/report.html 78982 1.073"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def check(page: Path, figures: list[str]) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,1024", f"--user-data-dir={profile}"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            driver.get(page.resolve().as_uri())
            images = driver.execute_script(
                "return Array.from(document.images).map(i => [i.id, i.complete, i.naturalWidth])")
            text = driver.execute_script("return document.body.innerText")
            title = driver.title
        finally:
            driver.quit()
    return {"title": title, "images": images,
            "all_rendered": bool(images) and all(done and width > 0 for _, done, width in images),
            "figures_found": {f: f in text for f in figures}}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    result = check(Path(sys.argv[1]), sys.argv[2:])
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["all_rendered"] and all(result["figures_found"].values()) else 1)
