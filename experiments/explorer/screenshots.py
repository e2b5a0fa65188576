"""Screenshots of each view of an explorer page, taken by headless Chromium (no network):
    .venv/bin/python experiments/explorer/screenshots.py outputs/runs/tiny_corpus/<stamp>/explore.html
writes experiments/explorer/<view>.png, each with a hover that shows what the view does."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains

OUT = Path(__file__).parent


def main(page: Path) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1280,900",
        "--hide-scrollbars",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.get(page.resolve().as_uri())
    time.sleep(2)
    hovers = {
        "text": "[data-view=text] .tok.hit",
        "samples": "[data-view=samples] .copy",
        "attention": "[data-view=attention] .att-query:nth-of-type(15)",
    }
    for view in ("curves", "text", "samples", "decoding", "attention"):
        section = driver.find_element("css selector", f"[data-view={view}]")
        driver.execute_script("arguments[0].scrollIntoView()", section)
        if view == "decoding":  # a sampled setting: T 1.5, top-k 6, top-p 0.92 at the 4th step
            driver.execute_script("""const c = document.querySelectorAll('[data-view=decoding] input');
                document.querySelector('[data-view=decoding] select').value = '1';
                c[0].value = 2; c[1].value = 1.5; c[2].value = 6; c[3].value = 0.92;
                c[0].dispatchEvent(new Event('input'));
                document.querySelector('[data-view=decoding] select:last-of-type').value = '3';
                c[0].dispatchEvent(new Event('input'));""")
        if view == "attention":  # the last layer, whose heads look back at the tokens to copy
            driver.execute_script("""const s = document.querySelector('[data-view=attention] select');
                s.value = String(s.options.length - 1); s.dispatchEvent(new Event('input'));""")
        if view in hovers:
            ActionChains(driver).move_to_element(driver.find_elements("css selector", hovers[view])[0]).perform()
        time.sleep(0.5)
        driver.save_screenshot(str(OUT / f"{view}.png"))
        print(OUT / f"{view}.png")
    driver.quit()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
