"""The explorer page in a real browser (Debian's Chromium, headless, with every network request blocked):
it loads with no error, draws every view, asks nothing of the network, shows where a copy comes from, and
its sampling transforms equal gptfit.core.sampling's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gptfit.core.decoding_settings import DecodingConfig
from gptfit.core.sampling.transforms import transform
from tests.conftest import TINY, error_lines, run_cli

VIEWS = ("curves", "text", "samples", "decoding", "attention")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ):  # no host resolves: nothing can leave the machine
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
    yield driver
    driver.quit()


def open_page(browser, path):
    browser.get_log("performance")  # drop what earlier pages logged
    browser.get(path.resolve().as_uri())
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(
        lambda d: all(
            d.execute_script(f"return document.querySelector('[data-view=\"{v}\"]').dataset.rendered") == "true"
            for v in VIEWS
            if d.execute_script(f"return !!document.querySelector('[data-view=\"{v}\"]')")
        )
    )


def network_requests(browser) -> list[str]:
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(("file:", "data:", "about:", "blob:")):
                urls.append(url)
    return urls


@pytest.mark.slow
def test_the_tiny_corpus_page_loads_offline_and_draws_every_view(browser, tiny_corpus_run):
    page = tiny_corpus_run / "explore.html"
    assert page.stat().st_size < 8_000_000
    open_page(browser, page)
    for view in VIEWS:
        assert (
            browser.execute_script(f"return document.querySelector('[data-view=\"{view}\"]').dataset.rendered")
            == "true"
        )
    assert browser.execute_script("return document.body.dataset.errors || '0'") == "0"
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert network_requests(browser) == []
    # Every view holds what it shows: the table's text, the samples, the playground, the attention prompt.
    assert browser.execute_script("return document.querySelectorAll('[data-view=text] .seq').length") == 96
    assert browser.execute_script("return document.querySelectorAll('[data-view=samples] .seq').length") > 0
    assert browser.execute_script("return document.querySelectorAll('[data-view=decoding] .bar').length") > 0
    assert browser.execute_script("return document.querySelectorAll('[data-view=curves] .js-plotly-plot').length") == 2


def test_hovering_a_copied_span_shows_the_training_document_it_came_from(browser, tiny_corpus_run):
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(browser, tiny_corpus_run / "explore.html")
    copies = browser.find_elements("css selector", "[data-view=samples] .copy")
    assert copies, "tiny_corpus's greedy samples copy their training text"
    ActionChains(browser).move_to_element(copies[0]).perform()
    tip = browser.find_element("id", "tip")
    assert tip.is_displayed() and "training document" in tip.text
    marked = tip.find_element("tag name", "mark").text
    assert marked and marked.replace("⏎", "\n") in tip.text.replace("⏎", "\n")
    # The marked source text is the copied span itself (the page shows spaces as ·, the tip as spaces), compared
    # without whitespace: Chromium 156's element text drops the newlines that open the mark.
    shown = copies[0].text.replace("·", " ").replace("⏎", "\n")
    assert "".join(marked.split()) == "".join(shown.split())


def test_hovering_a_token_draws_its_attention_to_earlier_tokens_only(browser, tiny_corpus_run):
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(browser, tiny_corpus_run / "explore.html")
    queries = browser.find_elements("css selector", "[data-view=attention] .att-query")
    ActionChains(browser).move_to_element(queries[5]).perform()
    keys = [
        int(k)
        for k in browser.execute_script(
            "return [...document.querySelectorAll('[data-view=attention] .att-line')].map(l => l.dataset.key)"
        )
    ]
    assert keys and max(keys) <= 5


def test_the_pages_transforms_equal_the_cores(browser, tiny_corpus_run):
    open_page(browser, tiny_corpus_run / "explore.html")
    rng = np.random.default_rng(0)
    for trial in range(50):
        vocab = int(rng.choice([50, 300, 2048]))
        logits = (rng.normal(size=vocab) * rng.uniform(0.5, 4)).astype(np.float16).astype(np.float32)
        temperature = float(np.float32(rng.uniform(0.3, 2.0)))
        top_k = int(rng.choice([0, 1, 5, 40]))
        top_p = float(rng.choice([1.0, rng.uniform(0.3, 0.99)]))
        page = browser.execute_script(
            "return window.gptfitKeep(arguments[0], arguments[1], arguments[2], arguments[3])",
            logits.tolist(),
            temperature,
            top_k,
            top_p,
        )
        setting = DecodingConfig(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
        scores = transform(torch.from_numpy(logits)[None], setting)[0]
        probs = scores.softmax(-1)
        kept = torch.nonzero(torch.isfinite(scores))[:, 0].tolist()
        assert sorted(page["ids"]) == kept, (trial, temperature, top_k, top_p)
        assert np.allclose(page["probs"], probs[page["ids"]].numpy(), atol=1e-6), trial


def test_a_short_run_without_samples_or_attention_from_a_path_with_spaces(browser, make_config, tmp_path):
    from gptfit.run.training import train

    run_dir = tmp_path / "a run folder with spaces"
    train(make_config([*TINY, "decoding=none", "eval.attention=false", "train.max_steps=5"], run_dir))
    open_page(browser, run_dir / "explore.html")
    assert browser.execute_script("return document.body.dataset.errors || '0'") == "0"
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert "No samples" in browser.find_element("css selector", "[data-view=samples]").text


@pytest.mark.slow
def test_the_explore_command_writes_a_page_and_a_missing_run_is_one_line(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "my page.html"
    result = run_cli(f"run={run_dir}", f"out='{out}'", module="gptfit.explore")
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.stat().st_size > 1_000_000 and str(out) in result.stdout
    missing = run_cli(f"run={tmp_path / 'nothing'}", module="gptfit.explore")
    assert missing.returncode == 2
    lines = error_lines(missing.stderr)
    assert len(lines) == 1 and "no such run directory" in lines[0]
