"""The web app: the handler as a function, the running server through gradio_client, and a real
headless Chromium that submits a caption and sees images in the gallery."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dishgen.web import GenerationService, InputError, ModelChoices, WebLimits

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


class ColourGenerator:
    """A stand-in generator: a colour from the caption and seed, so results are checkable."""

    family = "cgan"
    knobs = ("batch_size",)

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()

    def generate(self, prompts, num_images=1, seed=None, **knobs):
        with self.lock:
            self.calls += 1
        rng = np.random.default_rng([seed or 0, sum(map(ord, prompts[0]))])
        out = []
        for _ in prompts:
            for _ in range(num_images):
                colour = tuple(int(v) for v in rng.integers(0, 255, 3))
                out.append(Image.new("RGB", (32, 32), colour))
        return out


@pytest.fixture()
def service(tmp_path: Path):
    run = tmp_path / "runs" / "my-gan"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"family": "cgan"}))
    choices = ModelChoices.discover(runs_dirs=[tmp_path / "runs"], include_default=False)
    fake = ColourGenerator()
    svc = GenerationService(choices, WebLimits(max_images=4, concurrency=2), loader=lambda ref, **kw: fake)
    svc.fake = fake
    return svc


def test_handler_validates_and_generates(service):
    model = "run: my-gan"
    assert service.choices.names == [model]
    images, seed = service.generate("Sarma in a clay pot", "", model, 3, 7)
    assert len(images) == 3 and seed == 7
    again, _ = service.generate("Sarma in a clay pot", "", model, 3, 7)
    assert [im.getpixel((0, 0)) for im in images] == [im.getpixel((0, 0)) for im in again]
    other, _ = service.generate("Ćevapi with onions", "", model, 3, 7)
    assert [im.getpixel((0, 0)) for im in other] != [im.getpixel((0, 0)) for im in images]
    _, random_seed = service.generate("Sarma", "", model, 1, -1)
    assert 0 <= random_seed < 2**31

    bad = [
        (("", "", model, 1, 0), "type a caption"),
        (("x" * 301, "", model, 1, 0), "limit is 300"),
        (("Sarma", "", "../../etc/passwd", 1, 0), "Unknown model"),
        (("Sarma", "", model, 5, 0), "between 1 and 4"),
        (("Sarma", "", model, 0, 0), "between 1 and 4"),
        (("Sarma", "", model, 1.5, 0), "whole number"),
        (("Sarma", "", model, 1, -5), "Seed"),
        (("Sarma", "", model, 1, 0, 25, 7.0, 2.5), "Truncation must be between 0 and 2"),
        (("Sarma", "", model, 1, 0, 25, 7.0, 1.0, 1.5), "Anchor must be between 0 and 1"),
        (("Sarma", "", model, 1, 0, 25, 7.0, "lots"), "Truncation must be a number"),
    ]
    for args, message in bad:
        with pytest.raises(InputError, match=message):
            service.run(*args)

    # A GAN knob reaches a GAN; a GAN saved without its training captions is not anchored, and says so.
    seen = {}
    service.fake.generate = lambda prompts, num_images=1, seed=None, **knobs: seen.update(knobs) or ColourGenerator.generate(
        service.fake, prompts, num_images, seed)
    _, _, note = service.run("Sarma", "", model, 1, 0, truncation=0.5, anchor=1.0, temperature=1.5)
    assert seen == {"truncation": 0.5} and "without its training captions" in note
    _, _, note = service.run("Sarma", "", model, 1, 0, anchor=0.0)
    assert note == ""


def test_run_dirs_only_and_no_free_paths(tmp_path):
    (tmp_path / "runs" / "not-a-run").mkdir(parents=True)
    from dishgen.generation import ModelReferenceError

    with pytest.raises(ModelReferenceError, match="no model to serve"):
        ModelChoices.discover(runs_dirs=[tmp_path / "runs"], include_default=False)
    with pytest.raises(ModelReferenceError, match="NAME=REF"):
        ModelChoices.discover(models=["just-a-path"], include_default=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(service):
    from dishgen.web import build_app

    port = _free_port()
    app = build_app(service)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", service
    finally:
        app.close()


def test_server_answers_gradio_client_and_survives_concurrency(server):
    from gradio_client import Client

    url, service = server
    client = Client(url, verbose=False)
    gallery, seed, _ = client.predict("Sarma in a clay pot", "", "run: my-gan", 2, 11, 25, 7.0, 1.0, 1.0, 1.0, api_name="/generate")
    assert seed == 11 and len(gallery) == 2
    with Image.open(gallery[0]["image"]) as im:
        assert im.size == (32, 32)

    # A bad request is answered with a message, and the server keeps serving.
    with pytest.raises(Exception, match="type a caption"):
        client.predict("", "", "run: my-gan", 1, 0, 25, 7.0, 1.0, 1.0, 1.0, api_name="/generate")

    def one(i):
        return Client(url, verbose=False).predict(f"dish {i}", "", "run: my-gan", 1, i, 25, 7.0, 1.0, 1.0, 1.0, api_name="/generate")

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    assert [r[1] for r in results] == list(range(20))
    assert all(len(r[0]) == 1 for r in results)



def test_gallery_downloads_carry_provenance(server):
    from gradio_client import Client

    from dishgen.generation_io import read_provenance

    url, service = server
    caption = "Ćevapi sa kajmakom i lukom"
    gallery, seed, _ = Client(url, verbose=False).predict(caption, "", "run: my-gan", 2, 11, 25, 7.0, 1.0, 1.0, 1.0, api_name="/generate")
    assert seed == 11 and len(gallery) == 2
    for index, item in enumerate(gallery):  # the files the page serves for download
        record = read_provenance(item["image"])
        assert {k: record[k] for k in ("caption", "seed", "index", "model", "family", "size")} == {
            "caption": caption, "seed": 11, "index": index, "model": service.choices.references["run: my-gan"],
            "family": "cgan", "size": [32, 32]}
        with Image.open(item["image"]) as im:
            assert im.text["parameters"].startswith(f"{caption}\nSeed: 11, ")

def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium and chromium-driver (.ci/browser-deps)")
def test_browser_submits_caption_and_sees_images(server):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, service = server
    browser, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#caption textarea")))
        box.send_keys("Sarma, cabbage rolls served in a clay pot")
        driver.find_element(By.CSS_SELECTOR, "#generate").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery img"))
        time.sleep(0.5)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "web-gallery.png"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#gallery img")) >= 1
        assert service.fake.calls >= 1
        # A GAN's page shows its knobs, not diffusion's, and says why the caption was not anchored.
        wait.until(lambda d: "training captions" in d.find_element(By.CSS_SELECTOR, "#note").text)
        page = driver.find_element(By.TAG_NAME, "body").text
        assert "Truncation" in page and "Anchor on training captions" in page
        assert "Guidance scale" not in page and "Temperature" not in page
    finally:
        driver.quit()


def test_bundled_model_through_the_page_handler():
    choices = ModelChoices.discover()
    assert choices.names == ["default (bundled)"] and not choices.is_diffusion("default (bundled)")
    svc = GenerationService(choices, WebLimits())
    images, seed = svc.generate("Sarma, cabbage rolls served in a clay pot", "", "default (bundled)", 2, 3)
    assert seed == 3 and len(images) == 2
    assert images[0].size == images[1].size and images[0].size[0] >= 64
    assert images[0].tobytes() != images[1].tobytes()

    # The bundled model keeps its training captions: the page says which dishes a caption was drawn as.
    anchored, _, note = svc.run("Pasulj prebranac, baked beans in a clay dish", "", "default (bundled)", 1, 3)
    assert note.startswith("Anchored on training dishes: ") and len(note) > 40
    raw, _, note = svc.run("Pasulj prebranac, baked beans in a clay dish", "", "default (bundled)", 1, 3, anchor=0.0)
    assert note == "" and raw[0].tobytes() != anchored[0].tobytes()
    def seed_spread(truncation):
        pair, _, _ = svc.run("Sarma", "", "default (bundled)", 2, 3, truncation=truncation)
        return np.abs(np.asarray(pair[0], float) - np.asarray(pair[1], float)).mean()

    assert seed_spread(0.0) < 0.6 * seed_spread(1.0)  # truncation reaches the model: z = 0 leaves only the pixel noise
