"""The app through gradio_client (API, streaming, 8 concurrent users) and through Chromium with Playwright."""

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port
from tests.tiny_models import HARMFUL_REQUEST, SAFE_REQUEST

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@contextlib.contextmanager
def launched_app(model_dir) -> Iterator[str]:
    """The app on a free local port, built in the environment as it stands, closed afterwards: its URL."""
    import app

    demo = app.build_app(str(model_dir))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextlib.contextmanager
def chromium_page(url: str, viewport: dict = DESKTOP):
    """A page of Debian's Chromium at ``url``, the browser closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=viewport)
            page.goto(url)
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def app_url(taught_model_dir, tmp_path_factory):
    queue = tmp_path_factory.mktemp("flags") / "queue.jsonl"
    os.environ["GUARDREASONER_FLAG_QUEUE"] = str(queue)
    with launched_app(taught_model_dir) as url:
        yield url, queue
    os.environ.pop("GUARDREASONER_FLAG_QUEUE", None)


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url[0], verbose=False)


def test_classify_endpoint_returns_the_result_as_json(client, taught_model_dir):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/classify", "/classify_stream"):  # the library's and the service's words
        assert [p["parameter_name"] for p in endpoints[name]["parameters"]] == ["prompt", "response"]
    result = client.predict(prompt=HARMFUL_REQUEST, response="", api_name="/classify")
    assert result["labels"] == {"prompt_harmfulness": "harmful", "response_refusal": None, "response_harmfulness": None}
    assert result["status"] == "ok" and result["model"] == str(taught_model_dir)
    assert result["reasoning"]["prompt_harmfulness"]["conclusion"] == "The human user's request is harmful."
    assert result["output_tokens"] > 100 and result["latency_s"] > 0
    assert result["verdicts"]["prompt_harmfulness"]["confidence"] > 0.5


def test_streaming_endpoint_yields_partial_results_then_the_result(client):
    partials = list(client.submit(HARMFUL_REQUEST, "", api_name="/classify_stream"))
    assert len(partials) > 10 and partials[-1]["done"] and not partials[0]["done"]
    texts = [p["text"] for p in partials]
    assert all(a == b[: len(a)] for a, b in zip(texts, texts[1:]))  # each extends the last
    first = next(i for i, p in enumerate(partials) for e in p["events"] if e["kind"] == "verdict")
    assert first < len(partials) - 1
    assert partials[-1]["result"]["labels"]["prompt_harmfulness"] == "harmful"


def test_eight_concurrent_users_each_get_their_own_complete_stream(client):
    prompts = [HARMFUL_REQUEST, SAFE_REQUEST] * 4
    jobs = [client.submit(p, "", api_name="/classify_stream") for p in prompts]
    finals = []
    for job in jobs:
        outputs = list(job)
        assert outputs[-1]["done"]
        finals.append(outputs[-1]["result"])
    assert [f["prompt"] for f in finals] == prompts
    assert [f["labels"]["prompt_harmfulness"] for f in finals] == ["harmful", "unharmful"] * 4
    assert all(f["status"] == "ok" for f in finals)


def test_over_long_input_is_refused_with_a_message(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="limit here is"):
        client.predict("x" * 30000, "", api_name="/classify")


def test_batch_check_lists_bad_rows_and_runs_the_rest(tmp_path, taught_model_dir):
    from guardreasoner import load_guard
    from webapp.batch import check_file
    from webapp.charts import verdict_counts

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": HARMFUL_REQUEST}) + "\nnot json\n" + json.dumps({"prompt": SAFE_REQUEST})
                    + "\n")
    seen = []
    outcome = check_file(load_guard(str(taught_model_dir), max_new_tokens=200), rows,
                         on_progress=lambda done, total: seen.append((done, total)))
    assert [str(e) for e in outcome.errors] == ["line 2: invalid JSON (Expecting value at column 1)"]
    assert [r[1] for r in outcome.table()] == ["harmful", "unharmful"] and seen[-1] == (2, 2)
    assert len(outcome.jsonl.read_text().splitlines()) == 2
    assert outcome.csv.read_text().splitlines()[0].startswith("line,prompt,response,prompt_harmfulness")
    figure = verdict_counts(outcome.records)
    assert dict(zip(figure.data[0].x, figure.data[0].y)) == {"harmful": 1, "unharmful": 1}


def test_benchmark_chart_places_a_report_beside_the_published_systems(shared_dir):
    from eval.score import score_run  # writing the report is eval's job; the app only reads it
    from webapp.charts import benchmark_report

    report = score_run(shared_dir / "predictions/GuardReasoner-8B", "paper")
    figure = benchmark_report({"8B": report})
    ours = figure.data[0]
    assert ours.name == "8B [paper]"
    assert dict(zip(ours.x, ours.y))["SimpleSafetyTests (prompt_harmfulness)"] == pytest.approx(99.497, abs=0.01)
    assert any(trace.name == "WildGuard 7B" for trace in figure.data)


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason="Debian's chromium is not installed (scripts/test.sh installs it; on CI this fails instead)")
def test_browser_analyze_lights_the_verdict_before_the_end_then_flag(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    url, queue = app_url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(url)
        page.locator("#request-box textarea").fill(HARMFUL_REQUEST)
        # Record, inside the page, the moment the request chip lights and the moment the run is done.
        page.evaluate("""() => {
            window.__marks = [];
            new MutationObserver(() => {
                const chip = document.querySelector('#chip-prompt_harmfulness');
                const status = document.querySelector('#run-status');
                const mark = chip && chip.dataset.provisional === 'true' ? 'provisional chip' : 'chip';
                if (chip && chip.dataset.state === 'harmful' && !window.__marks.includes(mark))
                    window.__marks.push(mark);
                if (status && status.dataset.state === 'done' && !window.__marks.includes('done'))
                    window.__marks.push('done');
            }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
        }""")
        page.locator("#analyze-button").click()
        page.wait_for_function("() => window.__marks.includes('done')", timeout=60000)
        assert page.evaluate("() => window.__marks") == ["provisional chip", "chip", "done"]
        assert page.locator("#chip-prompt_harmfulness").get_attribute("data-provisional") == "false"  # confirmed
        assert page.locator("#chip-prompt_harmfulness").get_attribute("data-state") == "harmful"
        assert "harmful" in page.locator("#panel-prompt_harmfulness textarea").input_value()
        page.get_by_text("Flag this result as wrong").click()
        page.locator("#correct-request").get_by_text("unharmful").click()
        page.locator("#flag-button").click()
        page.wait_for_selector("#flag-status", timeout=20000)
        first_status = page.locator("#flag-status").inner_text()
        page.locator("#flag-comment textarea").fill("a bread recipe, surely")
        page.locator("#flag-button").click()
        page.wait_for_function("() => document.querySelector('#flag-status')?.innerText.startsWith('Updated')",
                               timeout=20000)
        second_status = page.locator("#flag-status").inner_text()
        shot = tmp_path / "app-analyze-flag.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("GUARDREASONER_ARTIFACTS"):
            shutil.copy(shot, Path(os.environ["GUARDREASONER_ARTIFACTS"]) / shot.name)
        browser.close()
    assert shot.stat().st_size > 10000
    assert first_status.startswith("Recorded: the prompt should be unharmful.")
    assert "flag-" not in first_status and str(queue) not in first_status  # no hash, no server path
    assert "review queue" in first_status  # and where it goes
    assert second_status.startswith('Updated your earlier flag of this result: the prompt should be unharmful '
                                    '(comment: "a bread recipe, surely").')
    from webapp.flags import read_queue

    lines = [json.loads(line) for line in queue.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["id"] == lines[1]["id"]  # append-only: the update is a newer line
    flags = read_queue(queue)
    assert len(flags) == 1 and flags[0].comment == "a bread recipe, surely"  # readers keep the last per id
    assert flags[0].prompt == HARMFUL_REQUEST and flags[0].model_verdicts["prompt_harmfulness"] == "harmful"
    assert flags[0].corrected["prompt_harmfulness"] == "unharmful" and flags[0].source == "app_flag"


@pytest.mark.slow
def test_app_starts_on_the_embedded_model_and_says_so_when_the_hub_is_out_of_reach(embedded_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    monkeypatch.delenv("GUARDREASONER_MODEL", raising=False)
    from guardreasoner import DEFAULT_MODEL
    from webapp.state import GuardPool, model_banner

    pool = GuardPool(DEFAULT_MODEL)
    banner = model_banner(pool.get())
    assert "GuardReasoner-SmolLM2-135M (embedded, trained here)" in banner  # the shipped adapter, assets/embedded-guard
    assert "Offline fallback" in banner and "yueliu1999/GuardReasoner-1B" in banner
    assert pool.get().with_sampling(max_new_tokens=8).classify_one("Hello").output_tokens <= 8


# ---- The app in a browser, as a person uses it (issue #17) ----

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (scripts/test.sh installs it; on CI this fails instead)")
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport=DESKTOP)
    page.goto(app_url[0])
    page.wait_for_selector("#analyze-button")
    yield page
    page.close()


@pytest.fixture
def slow_model(monkeypatch):
    """Each streamed piece of the model's text 40 ms apart, so a person (the test) can press Stop mid-run."""
    import time

    from guardreasoner.backends.ctranslate2_backend import CTranslate2Backend
    from guardreasoner.backends.transformers_backend import TransformersBackend

    for local in (TransformersBackend, CTranslate2Backend):  # whichever engine `auto` picked for the app
        def slow_stream(self, prompt, sampling, stop=None, original=local.stream):
            for chunk in original(self, prompt, sampling, stop=stop):
                time.sleep(0.04)
                yield chunk

        monkeypatch.setattr(local, "stream", slow_stream)


def error_badges(page) -> int:
    """Gradio's red "Error" marks on outputs (its status tracker's error state); the message toast is not one."""
    return page.evaluate("""() => [...document.querySelectorAll('.error, span, div')].filter(element =>
        !element.closest('[data-testid="toast-body"], .toast-wrap, .toast-body') && element.offsetParent !== null
        && (element.classList.contains('error') || element.textContent.trim() === 'Error')).length""")


def chip_state(page, key):
    chip = page.locator(f"#chip-{key}")
    return chip.get_attribute("data-state"), chip.get_attribute("data-provisional")


@needs_chromium
def test_browser_stop_keeps_the_partial_reasoning_and_settled_verdicts_and_says_stopped(page, slow_model):
    assert page.locator("#stop-button").is_disabled()  # quiet until a run starts
    page.locator("#request-box textarea").fill(HARMFUL_REQUEST)
    page.locator("#analyze-button").click()
    page.wait_for_function("() => document.querySelector('#chip-prompt_harmfulness')?.dataset.state === 'harmful'",
                           timeout=60000)
    assert page.locator("#stop-button").is_enabled()
    page.locator("#stop-button").click()
    page.wait_for_function("() => document.querySelector('#run-status')?.dataset.state === 'stopped'", timeout=30000)
    page.wait_for_timeout(500)
    assert "stopped" in page.locator("#run-status").inner_text()
    assert "request is harmful" in page.locator("#panel-prompt_harmfulness textarea").input_value()
    assert chip_state(page, "prompt_harmfulness")[0] == "harmful"
    # No response was given: n/a from the start (known from the input); no verdict is made up at Stop.
    assert chip_state(page, "response_harmfulness")[0] == "n/a"
    assert error_badges(page) == 0
    assert page.locator("#stop-button").is_disabled()
    page.get_by_text("Flag this result as wrong").click()
    assert page.locator("#flag-button").is_disabled()  # a stopped run has no result to flag


@needs_chromium
def test_browser_an_input_error_shows_the_message_only_and_leaves_the_outputs_alone(page):
    page.locator("#analyze-button").click()  # no request typed
    page.get_by_text("Type the prompt first.").first.wait_for(timeout=20000)
    page.wait_for_timeout(1000)
    assert error_badges(page) == 0
    assert "Error" not in page.locator("#model-banner").inner_text()
    assert chip_state(page, "prompt_harmfulness")[0] == "pending"


@needs_chromium
def test_browser_a_new_run_clears_the_last_result_at_the_click_and_flag_waits_for_a_result(page, slow_model):
    page.get_by_text("Flag this result as wrong").click()
    assert page.locator("#flag-button").is_disabled()  # nothing to flag yet
    page.locator("#request-box textarea").fill(SAFE_REQUEST)
    page.locator("#analyze-button").click()
    page.wait_for_function("() => document.querySelector('#run-status')?.dataset.state === 'done'", timeout=60000)
    assert page.locator("#flag-button").is_enabled()
    assert SAFE_REQUEST in page.locator("#result-json").inner_text()
    page.locator("#request-box textarea").fill(HARMFUL_REQUEST)
    page.locator("#analyze-button").click()
    page.wait_for_function("() => document.querySelector('#run-status')?.dataset.state === 'generating'",
                           timeout=20000)
    assert page.locator("#flag-button").is_disabled()  # the old result cannot be filed while this one streams
    assert chip_state(page, "prompt_harmfulness")[0] == "pending"
    # No response was given: its chips say n/a while the prompt's verdict is still coming, not "…".
    assert [page.locator(f"#chip-{key}").inner_text() for key in ("response_refusal", "response_harmfulness")] \
        == ["n/a", "n/a"]
    assert SAFE_REQUEST not in page.locator("#result-json").inner_text()
    page.wait_for_function("() => document.querySelector('#run-status')?.dataset.state === 'done'", timeout=60000)
    assert HARMFUL_REQUEST in page.locator("#result-json").inner_text()
    # The Result box is as tall as its JSON and draws its lines down to the last one (it used to draw ~36, then a
    # blank area). CodeMirror draws the lines near the window, so the box's end is scrolled to first.
    page.evaluate("() => document.querySelector('#result-json .cm-content').scrollIntoView({block: 'end'})")
    page.wait_for_timeout(500)
    box, text, last = page.evaluate("""() => { const root = document.querySelector('#result-json');
        const gutter = [...root.querySelectorAll('.cm-lineNumbers .cm-gutterElement')].map(e => e.innerText);
        const lines = [...root.querySelectorAll('.cm-line')];
        return [root.getBoundingClientRect().height - root.querySelector('.cm-content').getBoundingClientRect().height,
                gutter[gutter.length - 1], lines[lines.length - 1].innerText]; }""")
    assert box < 80 and int(text) > 40 and last.strip() == "}"
    # Strictness re-labels this result from its probability at once (no new run) and says the threshold used.
    reasoning = page.locator("#panel-prompt_harmfulness textarea").input_value()
    assert page.locator("#chip-prompt_harmfulness").get_attribute("data-threshold") == ""
    p = float(re.search(r"p=([0-9.]+)", page.locator("#chip-prompt_harmfulness").locator("xpath=..").inner_text())[1])
    page.locator("#strictness").get_by_text("Fewer false positives").click()
    page.wait_for_function("() => document.querySelector('#chip-prompt_harmfulness')?.dataset.threshold === '0.75'",
                           timeout=10000)
    assert chip_state(page, "prompt_harmfulness")[0] == ("harmful" if p >= 0.75 else "unharmful")  # p: its label's
    assert "harmful from p = 0.75" in page.locator("#strictness-note").inner_text()
    assert '"threshold": 0.75' in page.locator("#result-json").inner_text()
    assert page.locator("#run-status").get_attribute("data-state") == "done"
    assert page.locator("#panel-prompt_harmfulness textarea").input_value() == reasoning  # the model did not run
    page.locator("#strictness").get_by_text("Balanced").click()
    page.wait_for_function("() => document.querySelector('#chip-prompt_harmfulness')?.dataset.threshold === ''",
                           timeout=10000)
    assert chip_state(page, "prompt_harmfulness")[0] == "harmful"


def test_flags_go_under_persistent_storage_when_it_exists(tmp_path, monkeypatch):
    from guardreasoner.records import FlagRecord
    from webapp import flags

    monkeypatch.delenv("GUARDREASONER_FLAG_QUEUE", raising=False)
    monkeypatch.delenv("ARGILLA_API_URL", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/guardreasoner")
    monkeypatch.setenv("GUARDREASONER_PERSISTENT_ROOT", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    flag = FlagRecord("flag-1", HARMFUL_REQUEST, None, "out", {}, {"prompt_harmfulness": "unharmful"})
    path, updated = flags.record_flag(flag)
    assert path == tmp_path / "data" / "flagged" / "queue.jsonl" and path.is_file() and not updated
    assert flags.where_it_goes(path) == "It waits for the reviewers in this Space's persistent storage."


def test_flags_on_a_space_without_persistent_storage_say_they_last_until_a_restart(tmp_path, monkeypatch):
    from guardreasoner.records import FlagRecord
    from webapp import flags

    monkeypatch.delenv("GUARDREASONER_FLAG_QUEUE", raising=False)
    monkeypatch.delenv("ARGILLA_API_URL", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/guardreasoner")
    monkeypatch.setenv("GUARDREASONER_PERSISTENT_ROOT", str(tmp_path / "no-data"))
    monkeypatch.chdir(tmp_path)
    flag = FlagRecord("flag-1", HARMFUL_REQUEST, None, "out", {}, {"prompt_harmfulness": "unharmful"})
    path, _ = flags.record_flag(flag)
    assert path == Path("flagged/queue.jsonl") and (tmp_path / path).is_file()
    message = flags.where_it_goes(path)
    assert message.startswith("Flags are kept only until this Space restarts")
    assert "ARGILLA_API_URL" in message and "persistent storage" in message
    _, updated = flags.record_flag(flag)
    assert updated and len(flags.read_queue(path)) == 1


@pytest.fixture
def slow_rows(monkeypatch):
    """Each batch of rows takes 1.5 s more, so the test can press Stop between rows."""
    import time

    from guardreasoner.backends.transformers_backend import TransformersBackend

    original = TransformersBackend.generate

    def slow_generate(self, prompts, sampling, on_progress=None):
        time.sleep(1.5)
        return original(self, prompts, sampling, on_progress=on_progress)

    monkeypatch.setattr(TransformersBackend, "generate", slow_generate)


def upload_rows(page, path):
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-button").wait_for()
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.wait_for_timeout(1500)


def headers_broken_mid_word(page) -> list[str]:
    """Header cells too narrow for their words (the text wraps inside a word, as "li ne")."""
    return page.evaluate("""() => [...document.querySelectorAll('#batch-table th')].filter(th => {
        const range = document.createRange(); range.selectNodeContents(th);
        return [...th.innerText.split(/\\s+/)].some(word => word && th.innerText.trim().length > 0
            && th.scrollWidth > th.clientWidth + 1);
    }).map(th => th.innerText.trim())""")


@needs_chromium
def test_browser_batch_shows_progress_per_row_and_stop_keeps_the_rows_done(page, slow_rows, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in [HARMFUL_REQUEST, SAFE_REQUEST] * 3))
    upload_rows(page, rows)
    page.locator("#batch-button").click()
    # Progress per row; a busy browser may draw a later row's count first, so any count short of the end will do.
    page.get_by_text(re.compile(r"Checking… [1-5] of 6 rows done\.")).first.wait_for(timeout=30000)
    assert page.locator("#batch-stop").is_enabled()
    page.locator("#batch-stop").click()
    page.get_by_text("Stopped after").wait_for(timeout=30000)
    message = page.locator("#batch-message").inner_text()
    done = int(message.split("Stopped after ")[1].split(" ")[0])
    assert 1 <= done < 6 and "ready to download" in message
    # The file links come in the same update as the message but render after it (on a busy CI machine, later).
    page.locator("#batch-files a").nth(1).wait_for(timeout=15000)
    assert page.locator("#batch-files a").count() == 2  # results.jsonl and results.csv of the rows done
    headers = [h.strip() for h in page.locator("#batch-table th").all_inner_texts() if h.strip()]
    assert headers[:4] == ["line", "prompt harmful", "response refusal", "response harmful"]
    box = page.locator("#batch-table th", has_text="response harmful").first.bounding_box()
    assert box["x"] + box["width"] <= DESKTOP["width"]  # the verdicts are in view at 1280 px
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(500)
    assert headers_broken_mid_word(page) == []


@needs_chromium
def test_browser_batch_of_only_bad_rows_offers_no_empty_download(page, tmp_path):
    rows = tmp_path / "bad.jsonl"
    rows.write_text("not json\n{\"no_prompt\": 1}\n")
    upload_rows(page, rows)
    page.locator("#batch-button").click()
    page.get_by_text("nothing to download").wait_for(timeout=30000)
    assert "2 rows could not be read" in page.locator("#batch-message").inner_text()
    assert page.locator("#batch-files a").count() == 0


@needs_chromium
def test_browser_benchmarks_chart_the_good_reports_name_the_bad_and_say_what_is_missing(page, shared_dir, tmp_path):
    from eval.score import score_run

    run = tmp_path / "run"  # the 8B predictions on two benchmarks only: the other cells are missing
    for benchmark in ("SimpleSafetyTests", "HarmBenchResponse"):
        shutil.copytree(shared_dir / "predictions/GuardReasoner-8B" / benchmark, run / benchmark)
    report = score_run(run, "paper")
    assert report["missing"] and report["overall_partial"]
    good = tmp_path / "8B.json"
    good.write_text(json.dumps(report))
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    page.get_by_role("tab", name="Benchmarks").click()
    page.wait_for_timeout(500)
    assert page.locator("#report-chart .js-plotly-plot").count() == 0  # no empty axes before an upload
    page.locator("input[type=file]").last.set_input_files([str(good), str(bad)])
    page.locator("#report-chart .js-plotly-plot").wait_for(timeout=30000)
    notes = page.locator("#report-notes").inner_text()
    assert "notes.json is not an evaluation report" in notes and "`" not in notes
    assert "8B: 2 cells charted; no result for" in notes and "so these averages are partial" in notes
    assert "overall" in notes and "AegisSafetyTest (prompt_harmfulness)" in notes
    legend = page.locator("#report-chart .legend").bounding_box()
    plot = page.locator("#report-chart .cartesianlayer").bounding_box()
    assert legend["y"] >= plot["y"] + plot["height"] - 1  # under the chart, not beside it
    assert "No cell carries verdict probabilities" in notes  # the 8B outputs are text: no curves
    assert page.locator("#report-curves .js-plotly-plot").count() == 0
    from tests.test_eval_calibration import HARMFUL_P, UNHARMFUL_P, write_run

    write_run(tmp_path / "scored", "ToxicChat", [("harmful", p) for p in HARMFUL_P] +
              [("unharmful", p) for p in UNHARMFUL_P])
    scored = tmp_path / "screen.json"
    scored.write_text(json.dumps(score_run(tmp_path / "scored", "strict")))
    page.locator("input[type=file]").last.set_input_files([str(good), str(scored)])
    page.locator("#report-curves .js-plotly-plot").wait_for(timeout=30000)
    curves = page.locator("#report-curves").inner_text()
    assert "Precision-recall" in curves and "screen: ToxicChat (prompt_harmfulness): AP 0.950" in curves
    assert "screen: 1 cells charted; no result for" in page.locator("#report-notes").inner_text()
    assert "1 of its cells carry verdict probabilities" in page.locator("#report-notes").inner_text()


AXE = Path(os.environ.get("GUARDREASONER_AXE", Path(__file__).resolve().parents[1] / ".cache/axe-core/axe.min.js"))
SCREENSHOTS = Path(__file__).resolve().parents[1] / "out" / "screenshots"  # named in the README; gitignored


def serious_axe_violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document)).violations"
                          ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
                          ".map(v => v.id + ': ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))")
    return "\n".join(found)


def contrast(page, selector) -> float:
    """WCAG contrast of an element's text colour on its own background colour, as the browser renders them."""
    return page.evaluate("""(selector) => {
        const style = getComputedStyle(document.querySelector(selector));
        const lum = rgb => { const [r, g, b] = rgb.match(/\\d+/g).slice(0, 3).map(v => {
            v = v / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const [a, b] = [lum(style.color), lum(style.backgroundColor)].sort((x, y) => y - x);
        return (a + 0.05) / (b + 0.05); }""", selector)


@needs_chromium
@pytest.mark.skipif(not AXE.is_file() and not os.environ.get("CI"),
                    reason="axe-core is not fetched (scripts/test.sh fetches it from npm into .cache/axe-core)")
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])
def test_browser_examples_accessible_readable_and_screenshotted(browser, app_url, viewport, tmp_path):
    """The four examples run in turn (screenshots in out/screenshots); then axe on each tab finds nothing serious,
    chips read at >= 4.5:1, the input boxes stack on a phone and a long paste stays bounded."""
    from webapp.settings import EXAMPLES

    page = browser.new_page(viewport=viewport)
    page.goto(app_url[0])
    page.wait_for_selector("#analyze-button")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for number, (prompt, reply) in enumerate(EXAMPLES, 1):
        page.locator("#request-box textarea").fill(prompt)
        page.locator("#reply-box textarea").fill(reply)
        page.evaluate("() => { const s = document.querySelector('#run-status'); if (s) s.dataset.state = 'old'; }")
        page.locator("#analyze-button").click()
        page.wait_for_function("() => document.querySelector('#run-status')?.dataset.state === 'done' && [...document"
                               ".querySelectorAll('.verdict-chip')].every(c => c.dataset.state !== 'pending')",
                               timeout=90000)
        page.screenshot(path=str(SCREENSHOTS / f"example-{number}-{viewport['width']}px.png"), full_page=True)
        if not reply:  # no reply: both reply chips say n/a, whatever the model wrote (#17.4)
            assert [chip_state(page, key)[0] for key in ("response_refusal", "response_harmfulness")] == ["n/a"] * 2
        for key in ("prompt_harmfulness", "response_refusal", "response_harmfulness"):
            assert contrast(page, f"#chip-{key}") >= 4.5, key
    assert serious_axe_violations(page) == ""
    request_box = page.locator("#request-box textarea").bounding_box()
    reply_box = page.locator("#reply-box textarea").bounding_box()
    if viewport is PHONE:
        assert reply_box["y"] > request_box["y"] + request_box["height"]  # stacked, each the full width
        page.evaluate("() => window.scrollTo(0, 0)")
        top = page.locator("#request-box textarea").bounding_box()["y"]
        assert top < 0.4 * PHONE["height"]  # the header leaves the input on the first screen
        assert request_box["width"] > 280  # the full width of the phone, less the page margins
    page.locator("#request-box textarea").fill("long text " * 2500)
    assert page.locator("#request-box textarea").bounding_box()["height"] < 400
    page.get_by_role("tab", name="Batch").click()
    page.wait_for_timeout(500)
    assert serious_axe_violations(page) == ""
    page.get_by_role("tab", name="Benchmarks").click()
    page.wait_for_timeout(500)
    assert serious_axe_violations(page) == ""
    page.close()


@pytest.mark.slow
@needs_chromium
def test_browser_auto_lights_the_screens_chips_first_and_explain_runs_the_reasoning(browser, embedded_cache):
    """The embedded guard with its shipped encoder screen, as a fresh clone runs it: in auto, a request the screen
    is sure of is decided without reasoning (the chip says the screen decided it); Explain then runs the model,
    and where its verdict differs from the screen's the note says so plainly."""
    import app
    from guardreasoner.models import EMBEDDED_GUARD_NAME
    from guardreasoner.screen import recommended_reasoning
    from webapp.views import NO_RESPONSE_NOTE, SCREEN_NOTE

    demo = app.build_app("embedded")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        page = browser.new_page(viewport=DESKTOP)
        page.goto(f"http://127.0.0.1:{port}/")
        # The embedded guard starts in the mode measured best for it (its screen card's recommendation).
        recommended = recommended_reasoning(EMBEDDED_GUARD_NAME)
        assert page.locator(f"#reasoning-mode input[value='{recommended}']").is_checked()
        page.locator("#reasoning-mode").get_by_text("auto", exact=False).first.click()
        page.locator("#request-box textarea").fill("What's a good way to learn Python?")
        page.locator("#analyze-button").click()
        page.wait_for_function("() => document.querySelector('#run-status')?.dataset.state === 'done'", timeout=30000)
        chip = page.locator("#chip-prompt_harmfulness")
        assert chip.get_attribute("data-state") == "unharmful" and chip.get_attribute("data-decided-by") == "screen"
        assert "decided by the screen" in page.locator("#chip-prompt_harmfulness + .verdict-note").inner_text()
        # No reasoning was run, and the panel says why and what Explain does.
        assert page.locator("#panel-prompt_harmfulness textarea").input_value() == SCREEN_NOTE
        assert page.locator("#panel-response_refusal textarea").input_value() == NO_RESPONSE_NOTE
        assert chip_state(page, "response_refusal")[0] == "n/a"  # no reply: nothing to decide
        assert page.locator("#explain-button").is_enabled()
        page.locator("#explain-button").click()
        page.wait_for_function("() => document.querySelector('#chip-prompt_harmfulness')?.dataset.decidedBy === "
                               "'reasoning' && document.querySelector('#run-status')?.dataset.state === 'done'",
                               timeout=240000)
        assert "Task 1" in page.locator("#panel-prompt_harmfulness textarea").input_value() or \
            page.locator("#panel-prompt_harmfulness textarea").input_value().strip()
        assert page.locator("#explain-button").is_disabled()  # nothing left that the screen decided
        reasoned = chip.get_attribute("data-state")
        note = page.locator("#chip-prompt_harmfulness + .verdict-note").inner_text()
        assert ("the reasoning model and the screen disagree: the screen said unharmful" in note) == \
            (reasoned == "harmful")  # the screen said unharmful above
        page.close()
    finally:
        demo.close()


def test_only_a_verdict_with_a_label_is_said_to_be_decided_by_the_screen():
    from webapp.views import verdict_note

    assert verdict_note({"decided_by": "screen", "label": "unharmful", "confidence": 0.66}) == \
        "decided by the screen, p=0.66"
    assert verdict_note({"decided_by": "screen", "label": None}) == ""  # no reply: n/a, not a screen's call


def test_a_reasoning_verdict_that_differs_from_the_screens_says_so():
    from guardreasoner.results import Verdict
    from webapp.views import verdict_note

    differs = Verdict("prompt_harmfulness", "harmful", screen_p_positive=0.12, screen_label="unharmful").to_dict()
    assert differs["disagrees"] is True
    assert verdict_note(differs) == ("the reasoning model and the screen disagree: the screen said unharmful "
                                     "(p=0.12 for harmful)")
    same = Verdict("prompt_harmfulness", "harmful", screen_p_positive=0.91, screen_label="harmful").to_dict()
    assert same["disagrees"] is False and verdict_note(same) == ""
    decided = Verdict("prompt_harmfulness", "harmful", decided_by="screen", screen_label="unharmful").to_dict()
    assert decided["disagrees"] is False  # the screen's own verdict is not a disagreement with itself


# ---- The handlers without a browser (webapp/handlers.py) ----

@pytest.fixture(scope="module")
def app_state(taught_model_dir):
    from webapp.state import build_state

    return build_state(str(taught_model_dir))


def test_the_api_runs_with_the_settings_the_page_starts_with(app_state):
    from dataclasses import replace

    from webapp import handlers
    from webapp.layout import build_page
    from webapp.settings import RunSettings

    demo = build_page(app_state)
    by_id = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    page = RunSettings.from_inputs(*(by_id[name].value for name in (
        "setting-model", "setting-endpoint", "setting-max-new-tokens", "setting-temperature", "reasoning-mode")))
    assert page == RunSettings(max_new_tokens=1024, reasoning="full")  # the taught model ships no screen
    seen = []
    real = app_state.calls
    app_state.calls = replace(real, classify_on_gpu=lambda *args: seen.append(args[-1]) or real.classify_on_gpu(*args))
    try:
        result = handlers.classify(app_state, HARMFUL_REQUEST)
    finally:
        app_state.calls = real
    assert seen == [page] and result["labels"]["prompt_harmfulness"] == "harmful"


def test_analyze_of_a_prompt_alone_says_n_a_for_the_response_from_the_first_frame(app_state):
    from webapp import handlers
    from webapp.settings import RunSettings

    frames = list(handlers.analyze(app_state, HARMFUL_REQUEST, "", RunSettings(max_new_tokens=256), "visitor"))
    assert len(frames) > 3
    for frame in frames:
        assert 'data-state="n/a"' in frame[4] and 'data-state="n/a"' in frame[5]  # never "…"
    assert 'data-state="pending"' in frames[0][3] and 'data-state="harmful"' in frames[-1][3]
    assert 'data-state="done"' in frames[-1][6]
    assert json.loads(frames[-1][8])["prompt"] == HARMFUL_REQUEST == frames[-1][9]["prompt"]


def test_the_stream_api_and_the_page_read_one_serialisation_of_a_stream_update(app_state):
    from webapp import handlers

    updates = list(handlers.classify_stream(app_state, HARMFUL_REQUEST))
    assert set(updates[0]) == {"done", "text", "elapsed_s", "events", "result", "screen"}
    assert updates[-1]["done"] and updates[-1]["result"]["prompt"] == HARMFUL_REQUEST
    verdicts = [event for update in updates for event in update["events"] if event["kind"] == "verdict"]
    assert verdicts and verdicts[0]["task"] == "prompt_harmfulness"


def test_panels_say_why_they_are_empty_when_the_screen_decided():
    from webapp.handlers import panel_texts
    from webapp.views import NO_RESPONSE_NOTE, SCREEN_NOTE

    decided = {"decided_by": "screen", "label": "unharmful"}
    none = {"decided_by": "screen", "label": None}
    result = {"verdicts": {"prompt_harmfulness": decided, "response_refusal": none, "response_harmfulness": none}}
    assert panel_texts("", result, has_response=False) == [SCREEN_NOTE, NO_RESPONSE_NOTE, NO_RESPONSE_NOTE]
    assert "Explain with reasoning" in SCREEN_NOTE
    assert panel_texts("", None, has_response=False) == ["", "", ""]  # while it runs, nothing is claimed


def test_flag_without_a_result_is_refused_and_a_flag_is_recorded_in_words(tmp_path, monkeypatch):
    import gradio as gr

    from webapp import handlers

    monkeypatch.setenv("GUARDREASONER_FLAG_QUEUE", str(tmp_path / "queue.jsonl"))
    monkeypatch.delenv("ARGILLA_API_URL", raising=False)
    with pytest.raises(gr.Error, match="Analyze something first"):
        handlers.flag(None, "unharmful", "n/a", "n/a", "")
    result = {"prompt": HARMFUL_REQUEST, "response": None, "output": "out", "model": "m",
              "labels": {"prompt_harmfulness": "harmful", "response_refusal": None, "response_harmfulness": None}}
    status = handlers.flag(result, "unharmful", "n/a", "n/a", "")
    assert "Recorded: the prompt should be unharmful." in status
    assert len((tmp_path / "queue.jsonl").read_text().splitlines()) == 1
